//! jobsource event store: the [`EventStore`] trait, positions and offsets, the envelope
//! codec with upcasting, and two backends with identical semantics: [`RedisStore`]
//! (partitioned Redis Streams, atomic Lua append) and [`MemoryStore`] (embedded mode and
//! fast tests).

pub mod append;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod locks;
pub mod memory;
mod memory_queue;
pub mod partition;
pub mod payload;
pub mod position;
pub mod queue;
pub mod redis;
pub mod store;
pub mod typed;
pub mod upcast;

pub use append::{AppendRequest, AppendResult, ExpectedVersion, Idempotency, StoreConfig};
pub use envelope::{Envelope, NewEvent, RecordedEvent};
pub use error::{DecodeError, ParseError, StoreError};
pub use locks::StreamLocks;
pub use memory::MemoryStore;
pub use payload::Payload;
pub use position::{Cursor, LogId, Offset, Position};
pub use queue::{ClaimSpec, Claimed, LeaseEntry, QueueOp};
pub use redis::RedisStore;
pub use store::{EventStore, EventStream};

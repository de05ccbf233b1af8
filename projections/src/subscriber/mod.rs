//! The subscriber runtime: one driver for every consumer of the event log.
//!
//! A consumer (a projection, the orchestrator, the webhook enqueuer, the seed bus, the
//! in-memory read model) is a [`Handler`]: it knows its checkpoint per partition and how to
//! apply a batch of one partition's events, moving its checkpoint with its effects. The
//! [`Subscriber`] does everything else, the same way for all of them:
//! - catch-up from the checkpoints, then following the live tail (one per process,
//!   shared through a [`WakeHub`], when a registry runs several consumers);
//! - batches, several partitions at once where the consumer allows;
//! - bounded retries with backoff; then a stall at the poison position, with the error,
//!   recorded in a [`StatusStore`] next to the consumer's checkpoints (PostgreSQL, Redis
//!   or memory), so the CLI and the API see it and `resume` clears it from any process;
//! - outages waited out (never counted as a failure of the event);
//! - `stop`, and status rows: checkpoint, lag, `running|stalled|stopped`, last error;
//! - metrics.
//!
//! It never skips an event: a partition stalls on the first event it cannot apply and the
//! other partitions, and the other consumers, go on.

mod batches;
pub mod fenced;
mod handler;
pub mod lease;
pub mod pg;
pub mod redis;
mod report;
mod runtime;
mod status;
mod wake;

pub use handler::{Handler, HandlerError, Outcome};
pub use runtime::{Phase, Subscriber, SubscriberConfig, BATCH_DURATION, EVENTS_APPLIED};
pub use status::{MemoryStatusStore, Recorded, StatusRow, StatusStore};
pub use wake::WakeHub;

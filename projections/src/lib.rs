//! jobsource projections: a projector runtime that reads the partition logs from
//! checkpoints and applies batches to read models, committing rows and checkpoint in one
//! PostgreSQL transaction, and the read models themselves.
//!
//! [`subscriber`] is the one runtime every consumer of the log runs on (catch-up, tail,
//! retries, stalls, resume, stop, status), with status stores for PostgreSQL, Redis and
//! memory.
//!
//! Each read model's reader lives beside its writer: [`redis`] (the hash model: writer,
//! machines, rebuild, reader) and [`postgres`] (the SQL model and its reader), both
//! answering with the shapes of [`view`]. The `archive` projection fills the `events`
//! table.

pub mod archive;
pub mod checkpoint;
pub mod error;
pub mod migrate;
pub mod postgres;
pub mod readahead;
pub mod rebuild;
pub mod rebuilder;
pub mod redis;
pub mod redis_worker;
pub mod runtime;
pub mod subscriber;
pub mod view;
pub mod worker;

pub use self::redis::model::RedisReadModel;
pub use archive::Archive;
pub use error::ProjectionError;
pub use postgres::PostgresReadModel;

// The projection worker (`redis_worker`) names the writer by its former path.
use self::redis::model as redis_model;
pub use runtime::{catch_up, run_batch, run_batch_until, PgProjection};

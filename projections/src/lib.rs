//! jobsource projections: a projector runtime that reads the partition logs from
//! checkpoints and applies batches to read models, committing rows and checkpoint in one
//! PostgreSQL transaction, and the read models themselves.
//!
//! - [`subscriber`]: the one runtime every consumer of the log runs on (catch-up, tail,
//!   retries, stalls, resume, stop, status), with status stores for PostgreSQL, Redis and
//!   memory;
//! - [`runtime`], [`checkpoint`]: PostgreSQL projections (rows and checkpoint in one
//!   transaction), [`archive`] and [`postgres`] (the `events` table and the SQL read model);
//! - [`redis_model`]: the seed's Redis hashes; [`rebuild`], [`redis_rebuild`]: rebuilds
//!   beside the live models.

pub mod archive;
pub mod checkpoint;
pub mod error;
pub mod migrate;
pub mod postgres;
pub mod rebuild;
pub mod redis_machines;
pub mod redis_model;
pub mod redis_rebuild;
pub mod redis_worker;
pub mod runtime;
pub mod subscriber;
pub mod worker;

pub use archive::Archive;
pub use error::ProjectionError;
pub use postgres::PostgresReadModel;
pub use redis_model::RedisReadModel;
pub use runtime::{catch_up, run_batch, run_batch_until, PgProjection};

//! jobsource projections: a projector runtime that reads the partition logs from
//! checkpoints and applies batches to read models, committing rows and checkpoint in one
//! PostgreSQL transaction, and the read models themselves.
//!
//! Today: the runtime, the checkpoints, the migrations and the `archive` projection (the
//! `events` table). The `redis` and `postgres` read models, rebuilds and the CLI verbs are
//! the rest of the projections issue.

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
pub mod worker;

pub use archive::Archive;
pub use error::ProjectionError;
pub use postgres::PostgresReadModel;
pub use redis_model::RedisReadModel;
pub use runtime::{catch_up, run_batch, run_batch_until, PgProjection};

//! Test harness shared by the cross-crate integration tests (`tests/tests/*.rs`).
//!
//! Every test isolates itself (see `scripts/test` and the project charter):
//!
//! - **Redis**: a unique key prefix per test ([`unique_prefix`]), whose keys the test
//!   deletes at the end with [`cleanup_prefix`].
//! - **PostgreSQL**: a fresh database per test ([`TestDatabase::create`]), dropped at the
//!   end with [`TestDatabase::drop_db`] (a best-effort drop also runs when the value is
//!   dropped without it, e.g. when the test panics).
//! - **Servers**: the shared servers named by `REDIS_URL` / `DATABASE_URL` (which
//!   `scripts/test` exports) are never stopped. A test that kills or restarts Redis starts
//!   its own [`PrivateRedis`].
//!
//! The `server` feature (on by default) adds `spawn_app`, a whole `jobsource serve`
//! with HTTP helpers; the read-model crates' tests use the harness without it
//! (`default-features = false`), so they do not build the HTTP crates.

#[cfg(feature = "server")]
pub mod app;
pub mod db;
pub mod drive;
pub mod env;
pub mod pg_server;
pub mod prefix;
pub mod redis_server;

#[cfg(feature = "server")]
pub use app::{spawn_app, spawn_app_with, Answer, TestApp};
pub use db::TestDatabase;
pub use drive::run_commands;
pub use env::{
    cluster_nodes, database_url, redis_target, redis_url, DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL,
};
pub use pg_server::PrivatePostgres;
pub use prefix::{cleanup_prefix, corrupt_log_entry, redis_connection, unique_prefix};
pub use redis_server::{free_port, PrivateRedis};

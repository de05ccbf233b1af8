//! Errors of the projection layer.

use jobsource_eventstore::StoreError;

/// Everything a projector can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Reading the event log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// PostgreSQL failed (the batch's transaction was rolled back).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The Redis read model's server failed.
    #[error("redis read model: {0}")]
    Redis(#[from] redis::RedisError),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A read-model entry that does not read as a view (a field that does not parse).
    #[error("{0}")]
    Corrupt(String),
    /// An event could not be applied (the batch was rolled back, the checkpoint stays).
    #[error("cannot apply event at {position}: {message}")]
    Apply {
        /// Position of the event.
        position: String,
        /// Why.
        message: String,
    },
}

impl ProjectionError {
    /// True for outages (database or store unreachable, connection lost, server shutting
    /// down): retried until the backend is back, never a reason to stall a projection.
    pub fn is_transient(&self) -> bool {
        match self {
            ProjectionError::Store(e) => e.is_unavailable(),
            ProjectionError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
            }
            ProjectionError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE classes 08 (connection exception) and 57 (operator
                // intervention: shutdown, cannot connect now).
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
                _ => false,
            },
            _ => false,
        }
    }
}

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
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An event could not be applied (the batch was rolled back, the checkpoint stays).
    #[error("cannot apply event at {position}: {message}")]
    Apply {
        /// Position of the event.
        position: String,
        /// Why.
        message: String,
    },
}

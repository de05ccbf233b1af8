//! Errors of the query side: what can go wrong answering a read.
//!
//! Kept apart from the command layer's `ServiceError` (which converts from it, keeping
//! the meaning each HTTP surface gives it: 400, 503, 500).

use jobsource_eventstore::StoreError;
use jobsource_projections::ProjectionError;

/// What can go wrong answering a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad input (query parameters, offsets, an unknown projection name): 400.
    #[error("{field}: {message}")]
    BadRequest {
        /// Offending field or parameter.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A backend (Redis, PostgreSQL) cannot be reached: 503.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// `redis`, `postgres` or `store`.
        backend: &'static str,
        /// Operator-facing detail (logged, not sent to clients).
        message: String,
    },
    /// A fault that is not the client's (an unreadable read-model row): 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// A 400 on one query parameter.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        QueryError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { message, .. } => QueryError::Unavailable {
                backend: "store",
                message,
            },
            StoreError::Invalid(message) => QueryError::BadRequest {
                field: "offset".into(),
                message,
            },
            other => QueryError::Internal(other.to_string()),
        }
    }
}

impl From<redis::RedisError> for QueryError {
    fn from(e: redis::RedisError) -> Self {
        if crate::outage::redis(&e) {
            QueryError::Unavailable {
                backend: "redis",
                message: e.to_string(),
            }
        } else {
            QueryError::Internal(format!("redis: {e}"))
        }
    }
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        if crate::outage::postgres(&e) {
            QueryError::Unavailable {
                backend: "postgres",
                message: e.to_string(),
            }
        } else {
            QueryError::Internal(format!("postgres: {e}"))
        }
    }
}

impl From<ProjectionError> for QueryError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Store(e) => e.into(),
            ProjectionError::Database(e) => e.into(),
            ProjectionError::Redis(e) => e.into(),
            other => QueryError::Internal(other.to_string()),
        }
    }
}

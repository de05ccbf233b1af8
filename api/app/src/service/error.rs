//! Errors of the command/query layer, each with the meaning the HTTP surfaces give it.

use jobsource_domain::{DomainError, FieldError};
use jobsource_eventstore::StoreError;

/// What can go wrong handling a command or a query.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A domain rule refused the command (404, 409 or 422 depending on the rule).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// `If-Match` named a version the stream is no longer (or not yet) at: 409.
    #[error("{kind} is at version {current}, not {expected}")]
    VersionConflict {
        /// `job` or `workflow`.
        kind: &'static str,
        /// Version the client expected.
        expected: u64,
        /// Version the stream is at.
        current: u64,
    },
    /// The same idempotency key came with a different request: 422.
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// Conflicting writers kept winning (only without `If-Match`): 409.
    #[error("{kind} kept changing under concurrent writers; try again")]
    Contention {
        /// `job` or `workflow`.
        kind: &'static str,
    },
    /// Bad input outside the domain's rules (query parameters, offsets): 400.
    #[error("{field}: {message}")]
    BadRequest {
        /// Offending field or parameter.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A lease expiry lost its race (the lease was renewed or ended): 409.
    #[error("the job's lease is not due")]
    LeaseNotDue,
    /// A backend (Redis, PostgreSQL) cannot be reached: 503, nothing half-applied.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// `redis`, `postgres` or `store`.
        backend: &'static str,
        /// Operator-facing detail (logged, not sent to clients).
        message: String,
    },
    /// A fault that is not the client's: 500 with a generic message (details logged).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// A validation failure on one field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::Domain(DomainError::Validation(vec![FieldError::new(
            field, message,
        )]))
    }

    /// A 400 on one query parameter or header.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyKeyReused { key } => ServiceError::IdempotencyKeyReused { key },
            StoreError::LeaseNotDue { .. } => ServiceError::LeaseNotDue,
            StoreError::Unavailable { message, .. } => ServiceError::Unavailable {
                backend: "store",
                message,
            },
            StoreError::Invalid(message) => ServiceError::BadRequest {
                field: "offset".into(),
                message,
            },
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<redis::RedisError> for ServiceError {
    fn from(e: redis::RedisError) -> Self {
        if crate::outage::redis(&e) {
            ServiceError::Unavailable {
                backend: "redis",
                message: e.to_string(),
            }
        } else {
            ServiceError::Internal(format!("redis: {e}"))
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        if crate::outage::postgres(&e) {
            ServiceError::Unavailable {
                backend: "postgres",
                message: e.to_string(),
            }
        } else {
            ServiceError::Internal(format!("postgres: {e}"))
        }
    }
}

impl From<crate::read::QueryError> for ServiceError {
    fn from(e: crate::read::QueryError) -> Self {
        use crate::read::QueryError;
        match e {
            QueryError::BadRequest { field, message } => {
                ServiceError::BadRequest { field, message }
            }
            QueryError::Unavailable { backend, message } => {
                ServiceError::Unavailable { backend, message }
            }
            QueryError::Internal(message) => ServiceError::Internal(message),
        }
    }
}

//! Domain errors: each variant names the rule that was broken.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One invalid field of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Field path, e.g. `priority` or `steps[2].depends_on`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// Creates a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The aggregate does not exist (a non-creating command on a new one). HTTP 404.
    #[error("{kind} not found")]
    NotFound {
        /// `job` or `workflow`.
        kind: &'static str,
    },
    /// A creating command on an aggregate that already exists. HTTP 409.
    #[error("{kind} already exists")]
    AlreadyExists {
        /// `job` or `workflow`.
        kind: &'static str,
    },
    /// The command is not allowed in the current status. HTTP 409 `INVALID_TRANSITION`.
    #[error("cannot {command} {kind} in status {status}")]
    InvalidTransition {
        /// `job` or `workflow`.
        kind: &'static str,
        /// The command, e.g. `assign`.
        command: &'static str,
        /// The current status.
        status: String,
    },
    /// A worker reported on a job it does not hold (never held it, or its lease expired
    /// and the job moved on). HTTP 409 `INVALID_TRANSITION` with the current status.
    #[error("worker {worker_id} does not hold this {kind} (status {status})")]
    NotHolder {
        /// `job`.
        kind: &'static str,
        /// The reporting worker.
        worker_id: String,
        /// The current status.
        status: String,
    },
    /// Field-level validation failed. HTTP 422 `VALIDATION_FAILED`.
    #[error("validation failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Validation(Vec<FieldError>),
}

impl DomainError {
    /// A validation error on one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Validation(vec![FieldError::new(field, message)])
    }
}

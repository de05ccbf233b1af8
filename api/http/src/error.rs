//! The one place errors become HTTP responses (`/v1` shape).
//!
//! Body: `{"error":{"code","message","details":[{"field","message"}]}}`, plus
//! `current_status` on `INVALID_TRANSITION` and `current_version` on `VERSION_CONFLICT`.
//! Backend and internal failures answer with a generic message; their detail goes to the
//! log (with the request's correlation id), never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobsource_domain::{DomainError, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

use jobsource_app::read::QueryError;
use jobsource_app::service::ServiceError;

/// An error answered by a `/v1` route.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the command/query layer.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Unreadable request (JSON syntax, wrong types, bad path or query parameter): 400.
    #[error("{field}: {message}")]
    Malformed {
        /// Offending field, parameter or header.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Missing or unknown API key: 401.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// Body over the limit: 413.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No such route or resource: 404.
    #[error("{message}")]
    NotFound {
        /// `JOB_NOT_FOUND`, `WORKFLOW_NOT_FOUND`, `MACHINE_NOT_FOUND` or `NOT_FOUND`.
        code: &'static str,
        /// What was not found.
        message: String,
    },
}

impl From<QueryError> for ApiError {
    /// A query's error answers as the command layer's error of the same meaning (400, 503
    /// or 500, same body).
    fn from(e: QueryError) -> Self {
        ApiError::Service(ServiceError::from(e))
    }
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Malformed {
            field: field.into(),
            message: message.into(),
        }
    }

    /// 404 for a job.
    pub fn job_not_found(id: impl std::fmt::Display) -> Self {
        ApiError::NotFound {
            code: "JOB_NOT_FOUND",
            message: format!("job {id} not found"),
        }
    }

    /// 404 for a machine.
    pub fn machine_not_found(id: impl std::fmt::Display) -> Self {
        ApiError::NotFound {
            code: "MACHINE_NOT_FOUND",
            message: format!("machine {id} not found"),
        }
    }

    /// 404 for a workflow.
    pub fn workflow_not_found(id: impl std::fmt::Display) -> Self {
        ApiError::NotFound {
            code: "WORKFLOW_NOT_FOUND",
            message: format!("workflow {id} not found"),
        }
    }
}

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code, message and field-level details of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (e.g. `VALIDATION_FAILED`).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Field-level problems.
    pub details: Vec<FieldDetail>,
    /// On `INVALID_TRANSITION`: the status the aggregate is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
    /// On `VERSION_CONFLICT`: the version the aggregate is at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

/// One field-level problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldDetail {
    /// Field path (`priority`, `steps[2].depends_on`, `If-Match`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl From<&FieldError> for FieldDetail {
    fn from(f: &FieldError) -> Self {
        FieldDetail {
            field: f.field.clone(),
            message: f.message.clone(),
        }
    }
}

impl ApiError {
    /// Status and body of this error.
    pub fn parts(&self) -> (StatusCode, ErrorDetail) {
        let detail = |code: &str, message: String, details: Vec<FieldDetail>| ErrorDetail {
            code: code.to_owned(),
            message,
            details,
            current_status: None,
            current_version: None,
        };
        match self {
            ApiError::Malformed { field, message } => (
                StatusCode::BAD_REQUEST,
                detail(
                    "MALFORMED_REQUEST",
                    format!("malformed request: {field}: {message}"),
                    vec![FieldDetail {
                        field: field.clone(),
                        message: message.clone(),
                    }],
                ),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                detail(
                    "UNAUTHORIZED",
                    "missing or invalid API key (send Authorization: Bearer <key> or X-API-Key)"
                        .into(),
                    vec![],
                ),
            ),
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                detail(
                    "PAYLOAD_TOO_LARGE",
                    format!("request body exceeds the limit of {limit} bytes"),
                    vec![],
                ),
            ),
            ApiError::NotFound { code, message } => {
                (StatusCode::NOT_FOUND, detail(code, message.clone(), vec![]))
            }
            ApiError::Service(e) => service_parts(e),
        }
    }
}

fn service_parts(e: &ServiceError) -> (StatusCode, ErrorDetail) {
    let plain = |status, code: &str, message: String, details| {
        (
            status,
            ErrorDetail {
                code: code.to_owned(),
                message,
                details,
                current_status: None,
                current_version: None,
            },
        )
    };
    match e {
        ServiceError::Domain(DomainError::NotFound { kind }) => plain(
            StatusCode::NOT_FOUND,
            match *kind {
                "workflow" => "WORKFLOW_NOT_FOUND",
                "machine" => "MACHINE_NOT_FOUND",
                _ => "JOB_NOT_FOUND",
            },
            format!("{kind} not found"),
            vec![],
        ),
        ServiceError::Domain(DomainError::AlreadyExists { kind }) => plain(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("{kind} already exists"),
            vec![],
        ),
        ServiceError::Domain(DomainError::InvalidTransition { status, .. }) => {
            let (s, mut d) = plain(
                StatusCode::CONFLICT,
                "INVALID_TRANSITION",
                e.to_string(),
                vec![],
            );
            d.current_status = Some(status.clone());
            (s, d)
        }
        ServiceError::Domain(DomainError::NotHolder { status, .. }) => {
            let (s, mut d) = plain(
                StatusCode::CONFLICT,
                "INVALID_TRANSITION",
                e.to_string(),
                vec![FieldDetail {
                    field: "worker_id".into(),
                    message: "this worker does not hold the job".into(),
                }],
            );
            d.current_status = Some(status.clone());
            (s, d)
        }
        ServiceError::LeaseNotDue => plain(
            StatusCode::CONFLICT,
            "INVALID_TRANSITION",
            e.to_string(),
            vec![],
        ),
        ServiceError::Domain(DomainError::Validation(fields)) => plain(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            e.to_string(),
            fields.iter().map(FieldDetail::from).collect(),
        ),
        ServiceError::VersionConflict { current, .. } => {
            let (s, mut d) = plain(
                StatusCode::CONFLICT,
                "VERSION_CONFLICT",
                e.to_string(),
                vec![FieldDetail {
                    field: "If-Match".into(),
                    message: format!("current version is {current}"),
                }],
            );
            d.current_version = Some(*current);
            (s, d)
        }
        ServiceError::Contention { .. } => plain(
            StatusCode::CONFLICT,
            "VERSION_CONFLICT",
            e.to_string(),
            vec![],
        ),
        ServiceError::IdempotencyKeyReused { .. } => plain(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            e.to_string(),
            vec![FieldDetail {
                field: "Idempotency-Key".into(),
                message: "already used with a different request body".into(),
            }],
        ),
        ServiceError::BadRequest { field, message } => plain(
            StatusCode::BAD_REQUEST,
            "MALFORMED_REQUEST",
            format!("malformed request: {field}: {message}"),
            vec![FieldDetail {
                field: field.clone(),
                message: message.clone(),
            }],
        ),
        ServiceError::Unavailable { backend, message } => {
            tracing::error!(backend, error = %message, "backend unavailable");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                format!("{backend} is unavailable; nothing was applied, retry later"),
                vec![],
            )
        }
        ServiceError::Internal(message) => {
            tracing::error!(error = %message, "internal error");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "internal error; see the server log".into(),
                vec![],
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.parts();
        (status, Json(ErrorBody { error })).into_response()
    }
}

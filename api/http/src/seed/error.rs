//! Errors of the seed API: `{success:false, error:{code, message}}`, with the seed's codes.
//!
//! Rules that only this surface has (the route's validation code, the seed's messages)
//! are decided here; everything else (conflicts, outages, internal faults, and their
//! logging) goes through the `/v1` mapping in [`crate::error`], so both surfaces
//! give a failure the same status and never leak internal detail.

use std::fmt::Display;

use axum::extract::OriginalUri;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobsource_domain::DomainError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use jobsource_app::read::QueryError;
use jobsource_app::service::ServiceError;

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedErrorBody {
    /// Always false.
    pub success: bool,
    /// Code and message.
    pub error: SeedErrorDetail,
    /// Only on a cancel of an unknown job or workflow: the seed's own answer there
    /// (`Job not found` / `Workflow not found`), kept beside the 404 error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Code and message of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedErrorDetail {
    /// `JOB_SUBMISSION_FAILED`, `WORKFLOW_CREATION_FAILED`, `JOB_NOT_FOUND`,
    /// `WORKFLOW_NOT_FOUND`, `INVALID_TIMEFRAME`, `UNAUTHORIZED`, `INTERNAL_ERROR`, ...
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// An error answered in the seed's shape.
#[derive(Debug)]
pub struct SeedError {
    status: StatusCode,
    code: String,
    message: String,
    legacy_message: Option<String>,
}

impl SeedError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        SeedError {
            status,
            code: code.into(),
            message: message.into(),
            legacy_message: None,
        }
    }

    /// Adds the seed's top-level `message` (cancel of an unknown id).
    pub fn with_legacy_message(mut self, message: impl Into<String>) -> Self {
        self.legacy_message = Some(message.into());
        self
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Error code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// 400 `<code>` with the seed's `"<Subject> validation failed: <details>"` message.
    pub fn validation(code: &str, subject: &str, details: impl Display) -> Self {
        SeedError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("{subject} validation failed: {details}"),
        )
    }

    /// 404 `JOB_NOT_FOUND` with the seed's message.
    pub fn job_not_found(id: &str) -> Self {
        SeedError::new(
            StatusCode::NOT_FOUND,
            "JOB_NOT_FOUND",
            format!("Job with ID {id} not found"),
        )
    }

    /// 404 `WORKFLOW_NOT_FOUND` with the seed's message.
    pub fn workflow_not_found(id: &str) -> Self {
        SeedError::new(
            StatusCode::NOT_FOUND,
            "WORKFLOW_NOT_FOUND",
            format!("Workflow with ID {id} not found"),
        )
    }

    /// 400 `INVALID_TIMEFRAME`, word for word the seed's.
    pub fn invalid_timeframe() -> Self {
        SeedError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_TIMEFRAME",
            "Timeframe must be hour, day, or week",
        )
    }

    /// Maps a query's error as [`SeedError::from_service`] maps the command error of the
    /// same meaning.
    pub fn from_query(e: QueryError, code: &str, subject: &str) -> Self {
        SeedError::from_service(e.into(), code, subject)
    }

    /// Maps a command or query error. `code` and `subject` name the route's validation
    /// failure (`JOB_SUBMISSION_FAILED` / `Job`, ...): a refused field is the client's
    /// 400 there, as in the seed, where `/v1` says 422.
    pub fn from_service(e: ServiceError, code: &str, subject: &str) -> Self {
        match e {
            ServiceError::Domain(DomainError::Validation(fields)) => SeedError::validation(
                code,
                subject,
                fields
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ServiceError::BadRequest { field, message } => {
                SeedError::validation(code, subject, format!("{field}: {message}"))
            }
            // The seed's not-found codes; the handlers that know the id say which.
            ServiceError::Domain(DomainError::NotFound { kind: "workflow" }) => SeedError::new(
                StatusCode::NOT_FOUND,
                "WORKFLOW_NOT_FOUND",
                "Workflow not found",
            ),
            ServiceError::Domain(DomainError::NotFound { .. }) => {
                SeedError::new(StatusCode::NOT_FOUND, "JOB_NOT_FOUND", "Job not found")
            }
            // Conflicts (409), outages (503 `STORE_UNAVAILABLE`) and internal faults (500
            // `INTERNAL_ERROR`, detail only in the log) as on `/v1`.
            other => {
                let (status, detail) = ApiError::Service(other).parts();
                SeedError::new(status, detail.code, detail.message)
            }
        }
    }
}

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        let body = SeedErrorBody {
            success: false,
            error: SeedErrorDetail {
                code: self.code,
                message: self.message,
            },
            message: self.legacy_message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// 401 for a missing or unknown API key (the auth middleware answers `/api` with it).
pub fn unauthorized() -> Response {
    SeedError::new(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "missing or invalid API key (send x-api-key: <key> or Authorization: Bearer <key>)",
    )
    .into_response()
}

/// The seed's catch-all: 404 `NOT_FOUND`, `Endpoint <METHOD> <path> not found`. Express
/// has no 405, so a known path with another method answers this too. (`OriginalUri`:
/// inside the nested router the plain URI has lost its `/api` prefix.)
pub async fn no_route(method: Method, OriginalUri(uri): OriginalUri) -> SeedError {
    SeedError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Endpoint {method} {} not found", uri.path()),
    )
}

//! The seed system's API (`/api`, SPEC section 6.2), exactly: its routes, request bodies,
//! response shapes, status codes and error codes, so its clients work unchanged.
//!
//! Every handler translates to the same command layer ([`crate::service::Service`]) and
//! read side ([`crate::read::ReadSide`]) as `/v1`. Differences from `/v1` the seed's
//! clients rely on:
//! - a command answers only once the `redis` read model has applied its events (bounded
//!   wait of [`VISIBILITY_WAIT`], then it answers anyway and logs a warning), because seed
//!   clients read their writes at once;
//! - errors are `{success:false, error:{code, message}}`; submissions and workflow creation
//!   that fail validation are 400 `JOB_SUBMISSION_FAILED` / `WORKFLOW_CREATION_FAILED`
//!   with a message starting "validation failed";
//! - job stats come from the Redis read model's queue structures (`jobs:pending` zset,
//!   `jobs:assigned|completed|failed` sets) as the seed's did: `running` counts assigned
//!   and running jobs, `total` is the sum of the four; like the seed, they are not limited
//!   by `timeframe` (which is validated and echoed); `by_type` counts jobs created in the
//!   timeframe (the seed returned `{}` there);
//! - request bodies accept unknown fields (seed clients send extra ones), absent optional
//!   response fields are omitted (the seed's `undefined`).
//!
//! Choices where the seed and SPEC differ (SPEC wins): an unknown job or workflow is 404
//! `JOB_NOT_FOUND` / `WORKFLOW_NOT_FOUND` on every route, including cancel (the seed
//! answered its cancel with 200 `{success:false, message:"Job not found"}`; the body here
//! also carries that `message`); a job id that is not a UUID is simply not found.

mod handlers;

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jobsource_domain::DomainError;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use crate::service::ServiceError;

pub use handlers::*;

/// Longest wait for the `redis` read model after a command.
pub const VISIBILITY_WAIT: Duration = Duration::from_secs(2);

/// The `/api` routes (mounted under `/api`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs/submit", post(handlers::submit))
        .route("/jobs/stats", get(handlers::job_stats))
        .route("/jobs/{id}/status", get(handlers::job_status))
        .route("/jobs/{id}/cancel", post(handlers::cancel_job))
        .route("/workflows", post(handlers::create_workflow))
        .route("/workflows/stats", get(handlers::workflow_stats))
        .route("/workflows/{id}/status", get(handlers::workflow_status))
        .route("/workflows/{id}/cancel", post(handlers::cancel_workflow))
        .route(
            "/internal/jobs/{id}/progress",
            post(handlers::internal_progress),
        )
        .route(
            "/internal/jobs/{id}/complete",
            post(handlers::internal_complete),
        )
}

/// `{success:false, error:{code, message}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedErrorBody {
    /// Always false.
    pub success: bool,
    /// The error.
    pub error: SeedErrorDetail,
    /// Set on not-found cancels (the seed's message there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Code and message.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedErrorDetail {
    /// The seed's code (`JOB_SUBMISSION_FAILED`, `JOB_NOT_FOUND`, ...).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// An error answered in the seed's shape.
#[derive(Debug)]
pub struct SeedError {
    status: StatusCode,
    code: &'static str,
    message: String,
    legacy_message: Option<String>,
}

impl SeedError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        SeedError {
            status,
            code,
            message: message.into(),
            legacy_message: None,
        }
    }

    /// 404 for a job.
    pub fn job_not_found(id: &str) -> Self {
        SeedError::new(
            StatusCode::NOT_FOUND,
            "JOB_NOT_FOUND",
            format!("Job with ID {id} not found"),
        )
    }

    /// 404 for a workflow.
    pub fn workflow_not_found(id: &str) -> Self {
        SeedError::new(
            StatusCode::NOT_FOUND,
            "WORKFLOW_NOT_FOUND",
            format!("Workflow with ID {id} not found"),
        )
    }

    /// 400 for a malformed body on a route without a seed-specific code.
    pub fn malformed(message: impl Into<String>) -> Self {
        SeedError::new(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST", message)
    }

    /// Maps a command/query error; `failed_code` is the route's validation code.
    pub fn from_service(e: ServiceError, failed_code: &'static str, id: &str) -> Self {
        match e {
            ServiceError::Domain(DomainError::Validation(fields)) => SeedError::new(
                StatusCode::BAD_REQUEST,
                failed_code,
                format!(
                    "validation failed: {}",
                    fields
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
            ServiceError::Domain(DomainError::NotFound { kind: "workflow" }) => {
                SeedError::workflow_not_found(id)
            }
            ServiceError::Domain(DomainError::NotFound { .. }) => SeedError::job_not_found(id),
            ServiceError::Domain(DomainError::InvalidTransition { .. })
            | ServiceError::Domain(DomainError::AlreadyExists { .. })
            | ServiceError::VersionConflict { .. }
            | ServiceError::Contention { .. } => {
                SeedError::new(StatusCode::CONFLICT, "INVALID_TRANSITION", e.to_string())
            }
            ServiceError::IdempotencyKeyReused { .. } => SeedError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                e.to_string(),
            ),
            ServiceError::BadRequest { .. } => {
                SeedError::new(StatusCode::BAD_REQUEST, failed_code, e.to_string())
            }
            ServiceError::Unavailable { backend, message } => {
                tracing::error!(backend, error = %message, "backend unavailable");
                SeedError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORE_UNAVAILABLE",
                    format!("{backend} is unavailable; nothing was applied, retry later"),
                )
            }
            ServiceError::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                SeedError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        let body = SeedErrorBody {
            success: false,
            error: SeedErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
            message: self.legacy_message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// 401 in the seed's shape (missing or unknown `x-api-key`).
pub fn unauthorized() -> Response {
    SeedError::new(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "missing or invalid API key (send x-api-key or Authorization: Bearer <key>)",
    )
    .into_response()
}

/// `{success:true}` plus fields.
pub fn ok(fields: serde_json::Value) -> Response {
    let mut body = json!({"success": true});
    if let (Some(b), serde_json::Value::Object(extra)) = (body.as_object_mut(), fields) {
        b.extend(extra);
    }
    Json(body).into_response()
}

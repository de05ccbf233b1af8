//! `/api/internal/jobs`: the seed's worker callbacks (progress and completion), onto the
//! same `ReportProgress` / `CompleteJob` commands as `/v1/jobs/{id}/progress|complete`.

use axum::extract::State;
use axum::Json;
use jobsource_domain::job::{CompleteJob, JobCommand, ReportProgress};
use jobsource_domain::DomainError;

use super::dto::{SeedCompleteRequest, SeedOk, SeedProgressRequest};
use super::error::{SeedError, SeedErrorBody};
use super::extract::{SeedContext, SeedId, SeedJson, SeedRequest};
use super::visible;
use crate::http::AppState;
use crate::service::{CommandContext, ServiceError};

/// Runs a worker's command on job `id` and waits until the read model shows it.
async fn run<R: SeedRequest>(
    state: &AppState,
    id: &SeedId,
    command: JobCommand,
    ctx: &CommandContext,
) -> Result<Json<SeedOk>, SeedError> {
    let uuid = id.uuid().ok_or_else(|| SeedError::job_not_found(&id.0))?;
    let outcome = state
        .service()
        .job(uuid, command, ctx)
        .await
        .map_err(|e| match e {
            ServiceError::Domain(DomainError::NotFound { .. }) => SeedError::job_not_found(&id.0),
            // A job that is not assigned or running: 409 `INVALID_TRANSITION` as on /v1.
            other => SeedError::from_service(other, R::FAILED_CODE, R::SUBJECT),
        })?;
    visible(state, outcome.position).await;
    Ok(Json(SeedOk { success: true }))
}

/// Worker progress report (seed internal API).
#[utoipa::path(post, path = "/api/internal/jobs/{id}/progress", tag = "seed", operation_id = "seed_internal_progress",
    params(("id" = String, Path, description = "Job id")), request_body = SeedProgressRequest,
    responses((status = 200, body = SeedOk),
        (status = 400, body = SeedErrorBody, description = "VALIDATION_FAILED (progress missing, out of 0..=100 or decreasing)"),
        (status = 404, body = SeedErrorBody, description = "JOB_NOT_FOUND"),
        (status = 409, body = SeedErrorBody, description = "INVALID_TRANSITION (job not assigned or running)"),
        (status = 401, body = SeedErrorBody), (status = 503, body = SeedErrorBody)))]
pub async fn progress(
    State(state): State<AppState>,
    id: SeedId,
    SeedContext(ctx): SeedContext,
    SeedJson(req): SeedJson<SeedProgressRequest>,
) -> Result<Json<SeedOk>, SeedError> {
    let invalid = |details: &str| {
        SeedError::validation(
            SeedProgressRequest::FAILED_CODE,
            SeedProgressRequest::SUBJECT,
            details,
        )
    };
    let progress = match req.progress {
        None => return Err(invalid("progress: required")),
        Some(p) if !(0.0..=100.0).contains(&p) => {
            return Err(invalid("progress: must be between 0 and 100"))
        }
        // In range, so the cast cannot truncate.
        Some(p) => p.round() as u8,
    };
    let command = JobCommand::ReportProgress(ReportProgress {
        worker_id: None,
        progress,
        stage: req.stage,
        message: req.message,
    });
    run::<SeedProgressRequest>(&state, &id, command, &ctx).await
}

/// Worker completion report (seed internal API).
#[utoipa::path(post, path = "/api/internal/jobs/{id}/complete", tag = "seed", operation_id = "seed_internal_complete",
    params(("id" = String, Path, description = "Job id")), request_body = SeedCompleteRequest,
    responses((status = 200, body = SeedOk),
        (status = 400, body = SeedErrorBody, description = "VALIDATION_FAILED"),
        (status = 404, body = SeedErrorBody, description = "JOB_NOT_FOUND"),
        (status = 409, body = SeedErrorBody, description = "INVALID_TRANSITION (job not assigned or running)"),
        (status = 401, body = SeedErrorBody), (status = 503, body = SeedErrorBody)))]
pub async fn complete(
    State(state): State<AppState>,
    id: SeedId,
    SeedContext(ctx): SeedContext,
    SeedJson(req): SeedJson<SeedCompleteRequest>,
) -> Result<Json<SeedOk>, SeedError> {
    let command = JobCommand::Complete(CompleteJob {
        worker_id: None,
        result: req.result,
        duration_ms: req.duration,
    });
    run::<SeedCompleteRequest>(&state, &id, command, &ctx).await
}

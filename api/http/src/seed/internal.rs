//! `/api/internal/jobs`: the seed's worker callbacks (progress and completion), onto the
//! same `ReportProgress` / `CompleteJob` commands as `/v1/jobs/{id}/progress|complete`.
//!
//! Seed workers took jobs from the queue themselves and then reported: a report naming
//! `worker_id` and `machine_id` on a pending job claims it for that worker, the assignment
//! and the report in one append (one version check, so a concurrent claim by another
//! worker makes exactly one of them win). A report from a worker on a job another worker
//! holds is a seed-shaped 409.

use axum::extract::State;
use axum::Json;
use jobsource_domain::job::{AssignJob, CompleteJob, JobCommand, ReportProgress};
use jobsource_domain::DomainError;

use super::dto::{SeedCompleteRequest, SeedOk, SeedProgressRequest};
use super::error::{SeedError, SeedErrorBody};
use super::extract::{SeedContext, SeedId, SeedJson, SeedRequest};
use super::visible;
use crate::AppState;
use jobsource_app::service::{CommandContext, ServiceError};

/// Runs a worker's report on job `id` (claiming a pending job for the named worker first)
/// and waits until the read model shows it.
async fn run<R: SeedRequest>(
    state: &AppState,
    id: &SeedId,
    command: JobCommand,
    worker: Option<(String, String)>,
    ctx: &CommandContext,
) -> Result<Json<SeedOk>, SeedError> {
    let uuid = id.uuid().ok_or_else(|| SeedError::job_not_found(&id.0))?;
    let service = state.service();
    let claimed = match worker {
        Some((worker_id, machine_id)) => {
            let assign = JobCommand::Assign(AssignJob {
                worker_id,
                machine_id,
                lease_expires_at: None,
            });
            match service
                .job_commands(uuid, vec![assign, command.clone()], ctx)
                .await
            {
                // Not pending: the report goes alone (and must come from the holder).
                Err(ServiceError::Domain(DomainError::InvalidTransition {
                    command: "assign",
                    ..
                })) => None,
                other => Some(other),
            }
        }
        None => None,
    };
    let result = match claimed {
        Some(result) => result,
        None => service.job(uuid, command, ctx).await,
    };
    let outcome = result.map_err(|e| match e {
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
        worker_id: req.worker_id.clone(),
        progress,
        stage: req.stage,
        message: req.message,
    });
    let worker = req.worker_id.zip(req.machine_id);
    run::<SeedProgressRequest>(&state, &id, command, worker, &ctx).await
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
    let duration_ms = match req.duration {
        Some(d) if !d.is_finite() || d < 0.0 => {
            return Err(SeedError::validation(
                SeedCompleteRequest::FAILED_CODE,
                SeedCompleteRequest::SUBJECT,
                "duration: must be a non-negative number",
            ))
        }
        // Fractions (the seed's tests send 45.5) are rounded to whole milliseconds.
        Some(d) => Some(d.round() as u64),
        None => None,
    };
    let command = JobCommand::Complete(CompleteJob {
        worker_id: req.worker_id.clone(),
        result: req.result,
        duration_ms,
    });
    let worker = req.worker_id.zip(req.machine_id);
    run::<SeedCompleteRequest>(&state, &id, command, worker, &ctx).await
}

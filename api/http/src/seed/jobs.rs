//! `/api/jobs`: submit, status, cancel and stats, as the seed's `job-routes.ts` answered.

use axum::extract::State;
use axum::Json;
use jobsource_domain::job::{CancelJob, JobCommand, JobStatus, Requirements, SubmitJob};
use jobsource_domain::DomainError;
use serde_json::Value;

use super::dto::{
    SeedCancelRequest, SeedJobStats, SeedJobStatsResponse, SeedJobStatusResponse, SeedMessage,
    SeedSubmitRequest, SeedSubmitResponse, SeedTimeframeQuery,
};
use super::error::{SeedError, SeedErrorBody};
use super::extract::{SeedContext, SeedId, SeedJson, SeedQuery, SeedRequest};
use super::{timeframe, visible};
use crate::AppState;
use jobsource_app::service::ServiceError;

/// Turns the seed's body into the domain command. Values the command's types cannot hold
/// (a negative priority) are refused here, with the domain's wording; everything else is
/// left to the domain (and the catalog), so both surfaces accept the same jobs.
fn command(req: SeedSubmitRequest) -> Result<SubmitJob, SeedError> {
    let mut errors = Vec::new();
    let defaults = SubmitJob::default();
    let priority = match req.priority {
        None => defaults.priority,
        Some(p) => u8::try_from(p).unwrap_or_else(|_| {
            errors.push("priority: priority must be 0..=100".to_owned());
            defaults.priority
        }),
    };
    let max_retries = match req.max_retries {
        None => defaults.max_retries,
        Some(m) => u32::try_from(m).unwrap_or_else(|_| {
            errors.push("max_retries: must be a count from 0".to_owned());
            defaults.max_retries
        }),
    };
    let requirements = match req.requirements {
        None | Some(Value::Null) => None,
        Some(v) => serde_json::from_value::<Requirements>(v)
            .map_err(|e| errors.push(format!("requirements: {e}")))
            .ok(),
    };
    if !errors.is_empty() {
        return Err(SeedError::validation(
            SeedSubmitRequest::FAILED_CODE,
            SeedSubmitRequest::SUBJECT,
            errors.join(", "),
        ));
    }
    Ok(SubmitJob {
        job_type: req.job_type.unwrap_or_default(),
        prompt: req.prompt,
        parameters: req.parameters.unwrap_or_default(),
        priority,
        requirements,
        webhook_url: req.webhook_url,
        depends_on: req.depends_on.unwrap_or_default(),
        max_retries,
        ..defaults
    })
}

/// Submit a job (seed API). Answers once the job is readable.
#[utoipa::path(post, path = "/api/jobs/submit", tag = "seed", operation_id = "seed_submit_job",
    request_body = SeedSubmitRequest,
    responses((status = 200, body = SeedSubmitResponse),
        (status = 400, body = SeedErrorBody, description = "JOB_SUBMISSION_FAILED (message contains \"validation failed\")"),
        (status = 401, body = SeedErrorBody), (status = 413, body = SeedErrorBody),
        (status = 503, body = SeedErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    SeedContext(ctx): SeedContext,
    SeedJson(req): SeedJson<SeedSubmitRequest>,
) -> Result<Json<SeedSubmitResponse>, SeedError> {
    let submit = command(req)?;
    let outcome = state
        .service()
        .submit_job(submit, &ctx)
        .await
        .map_err(|e| {
            SeedError::from_service(
                e,
                SeedSubmitRequest::FAILED_CODE,
                SeedSubmitRequest::SUBJECT,
            )
        })?;
    visible(&state, outcome.position).await;
    // The seed answered `submitted` for a queued job (its hash then said `pending`).
    let status = match outcome.state.status {
        Some(JobStatus::Waiting) => "waiting",
        _ => "submitted",
    };
    Ok(Json(SeedSubmitResponse {
        success: true,
        job_id: outcome.state.id,
        status: status.to_owned(),
    }))
}

/// Job status (seed API).
#[utoipa::path(get, path = "/api/jobs/{id}/status", tag = "seed", operation_id = "seed_job_status",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = SeedJobStatusResponse),
        (status = 404, body = SeedErrorBody, description = "JOB_NOT_FOUND"),
        (status = 401, body = SeedErrorBody), (status = 503, body = SeedErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    id: SeedId,
) -> Result<Json<SeedJobStatusResponse>, SeedError> {
    let uuid = id.uuid().ok_or_else(|| SeedError::job_not_found(&id.0))?;
    let query = |e| SeedError::from_query(e, "INTERNAL_ERROR", "Query");
    // The read model lags the log: a job it has not seen yet is folded from its stream.
    let job = match state.read().job(uuid).await.map_err(query)? {
        Some(job) => Some(job),
        None => jobsource_app::read::fold::job(state.service().store().as_ref(), uuid)
            .await
            .map_err(query)?,
    }
    .ok_or_else(|| SeedError::job_not_found(&id.0))?;
    Ok(Json(SeedJobStatusResponse {
        success: true,
        job: job.into(),
    }))
}

/// Cancel a waiting or pending job (seed API).
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "seed", operation_id = "seed_cancel_job",
    params(("id" = String, Path, description = "Job id")), request_body = Option<SeedCancelRequest>,
    responses((status = 200, body = SeedMessage,
            description = "{success:true, message:\"Job cancelled successfully\"} or {success:false, message:\"Cannot cancel job in status: <s>\"}"),
        (status = 404, body = SeedErrorBody, description = "JOB_NOT_FOUND (with the seed's message \"Job not found\")"),
        (status = 400, body = SeedErrorBody), (status = 401, body = SeedErrorBody),
        (status = 503, body = SeedErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    id: SeedId,
    SeedContext(ctx): SeedContext,
    SeedJson(req): SeedJson<SeedCancelRequest>,
) -> Result<Json<SeedMessage>, SeedError> {
    let not_found = || SeedError::job_not_found(&id.0).with_legacy_message("Job not found");
    let uuid = id.uuid().ok_or_else(not_found)?;
    let command = JobCommand::Cancel(CancelJob { reason: req.reason });
    match state.service().job(uuid, command, &ctx).await {
        Ok(outcome) => {
            visible(&state, outcome.position).await;
            Ok(Json(SeedMessage {
                success: true,
                message: "Job cancelled successfully".into(),
            }))
        }
        // The seed's refusal is a 200 with `success:false`, not an error.
        Err(ServiceError::Domain(DomainError::InvalidTransition { status, .. })) => {
            Ok(Json(SeedMessage {
                success: false,
                message: format!("Cannot cancel job in status: {status}"),
            }))
        }
        Err(ServiceError::Domain(DomainError::NotFound { .. })) => Err(not_found()),
        Err(e) => Err(SeedError::from_service(
            e,
            SeedCancelRequest::FAILED_CODE,
            SeedCancelRequest::SUBJECT,
        )),
    }
}

/// Job statistics (seed API): the Redis read model's queue structures.
#[utoipa::path(get, path = "/api/jobs/stats", tag = "seed", operation_id = "seed_job_stats",
    params(("timeframe" = Option<String>, Query, description = "hour, day (default) or week")),
    responses((status = 200, body = SeedJobStatsResponse),
        (status = 400, body = SeedErrorBody, description = "INVALID_TIMEFRAME"),
        (status = 401, body = SeedErrorBody), (status = 503, body = SeedErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    SeedQuery(q): SeedQuery<SeedTimeframeQuery>,
) -> Result<Json<SeedJobStatsResponse>, SeedError> {
    let (tf, since) = timeframe(q.timeframe.as_deref())?;
    let fail = |e| SeedError::from_query(e, "INTERNAL_ERROR", "Query");
    // Like the seed: ZCARD jobs:pending, SCARD jobs:assigned|completed|failed, whatever
    // the timeframe (its `since` was computed and never used).
    let counts = state.read().queue_counts().await.map_err(fail)?;
    // The seed always sent `{}` here; this fills it with what the name promises, for the
    // timeframe (from the list model, which counts every status).
    let by_type = state
        .read()
        .job_stats(Some(since))
        .await
        .map_err(fail)?
        .by_type;
    Ok(Json(SeedJobStatsResponse {
        success: true,
        stats: SeedJobStats {
            total: counts.pending + counts.assigned + counts.completed + counts.failed,
            pending: counts.pending,
            running: counts.assigned,
            completed: counts.completed,
            failed: counts.failed,
            by_type,
        },
        timeframe: tf.to_owned(),
    }))
}

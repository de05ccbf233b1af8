//! `/v1/jobs`: submit and drive jobs, read them (hot model, lists, stats, time travel)
//! and their audit trail.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use jobsource_domain::job::{Job, JobCommand};
use jobsource_domain::job_stream;

use super::dto::*;
use super::{limit, read_your_writes, since};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{CommandHeaders, JsonBody, OptionalJsonBody, PathId, QueryParams};
use crate::{schema, AppState};
use jobsource_app::read::{JobQuery, JobStats, JobView, Model, Page};
use jobsource_app::service::claims::{self, Claim};
use jobsource_app::service::{leases, Outcome, ServiceError};

fn answer(outcome: &Outcome<Job>) -> JobCommandResponse {
    JobCommandResponse {
        job_id: outcome.state.id,
        status: outcome
            .state
            .status
            .map_or("unknown", |s| s.as_str())
            .to_owned(),
        version: outcome.version,
        position: outcome.position.map(|p| p.to_string()),
        replayed: outcome.replayed,
        next: None,
    }
}

/// Submit a job.
#[utoipa::path(operation_id = "jobs_submit", post, path = "/v1/jobs", tag = "jobs", request_body = SubmitJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body: the original answer")),
    responses(
        (status = 201, body = JobCommandResponse, description = "Submitted"),
        (status = 200, body = JobCommandResponse, description = "Replayed (same Idempotency-Key and body)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "VALIDATION_FAILED or IDEMPOTENCY_KEY_REUSED"),
        (status = 503, body = ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    headers: CommandHeaders,
    body: JsonBody<SubmitJobRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = headers.context("POST /v1/jobs", &body.raw);
    let command = body
        .value
        .into_command(Utc::now())
        .map_err(jobsource_app::service::ServiceError::from)?;
    let outcome = state.service().submit_job(command, &ctx).await?;
    let status = if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(answer(&outcome))))
}

async fn run(
    state: &AppState,
    headers: &CommandHeaders,
    route: &str,
    raw: &[u8],
    id: uuid::Uuid,
    command: JobCommand,
) -> Result<Json<JobCommandResponse>, ApiError> {
    let ctx = headers.context(route, raw);
    let outcome = state.service().job(id, command, &ctx).await?;
    Ok(Json(answer(&outcome)))
}

/// Assign a pending job to a worker.
#[utoipa::path(operation_id = "jobs_assign", post, path = "/v1/jobs/{id}/assign", tag = "jobs", request_body = AssignRequest,
    params(("id" = uuid::Uuid, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = JobCommandResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "INVALID_TRANSITION or VERSION_CONFLICT"),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn assign(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: JsonBody<AssignRequest>,
) -> Result<Json<JobCommandResponse>, ApiError> {
    let cmd = JobCommand::Assign(
        body.value
            .into_command(Utc::now())
            .map_err(jobsource_app::service::ServiceError::from)?,
    );
    run(
        &state,
        &headers,
        &format!("POST /v1/jobs/{id}/assign"),
        &body.raw,
        id,
        cmd,
    )
    .await
}

/// Report progress (never decreases within an attempt).
#[utoipa::path(operation_id = "jobs_progress", post, path = "/v1/jobs/{id}/progress", tag = "jobs", request_body = ProgressRequest,
    params(("id" = uuid::Uuid, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = JobCommandResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn progress(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: JsonBody<ProgressRequest>,
) -> Result<Json<JobCommandResponse>, ApiError> {
    let cmd = JobCommand::ReportProgress(
        body.value
            .clone()
            .into_command()
            .map_err(jobsource_app::service::ServiceError::from)?,
    );
    run(
        &state,
        &headers,
        &format!("POST /v1/jobs/{id}/progress"),
        &body.raw,
        id,
        cmd,
    )
    .await
}

/// Complete a job.
#[utoipa::path(operation_id = "jobs_complete", post, path = "/v1/jobs/{id}/complete", tag = "jobs", request_body = CompleteRequest,
    params(("id" = uuid::Uuid, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = JobCommandResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn complete(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: OptionalJsonBody<CompleteRequest>,
) -> Result<Json<JobCommandResponse>, ApiError> {
    let next = next_claim(body.value.worker_id.as_deref(), body.value.next.clone())?;
    let cmd = JobCommand::Complete(body.value.into());
    let answer = run(
        &state,
        &headers,
        &format!("POST /v1/jobs/{id}/complete"),
        &body.raw,
        id,
        cmd,
    )
    .await?;
    with_next(&state, &headers, answer, next).await
}

/// Validates a report's `next` (it needs the reporting `worker_id`) into a claim.
fn next_claim(
    worker_id: Option<&str>,
    next: Option<ClaimRequest>,
) -> Result<Option<Claim>, ApiError> {
    let Some(n) = next else { return Ok(None) };
    let Some(worker_id) = worker_id else {
        return Err(ServiceError::validation("worker_id", "required with next").into());
    };
    let claim = super::workers::to_claim(
        worker_id.to_owned(),
        ClaimRequest {
            machine_id: n.machine_id,
            capabilities: n.capabilities,
            gpu_memory: n.gpu_memory,
            lease_seconds: n.lease_seconds,
            wait_ms: n.wait_ms,
        },
    )?;
    claims::validate(&claim).map_err(|e| prefix_field(e, "next."))?;
    Ok(Some(claim))
}

fn prefix_field(e: ServiceError, prefix: &str) -> ServiceError {
    match e {
        ServiceError::Domain(jobsource_domain::DomainError::Validation(fields)) => {
            ServiceError::Domain(jobsource_domain::DomainError::Validation(
                fields
                    .into_iter()
                    .map(|f| {
                        jobsource_domain::FieldError::new(format!("{prefix}{}", f.field), f.message)
                    })
                    .collect(),
            ))
        }
        other => other,
    }
}

/// Runs the report's `next` claim and puts its answer beside the report's.
async fn with_next(
    state: &AppState,
    headers: &CommandHeaders,
    mut answer: Json<JobCommandResponse>,
    next: Option<Claim>,
) -> Result<Json<JobCommandResponse>, ApiError> {
    if let Some(claim) = next {
        let mut ctx = headers.context("claim", b"");
        ctx.idempotency = None;
        ctx.expected_version = None;
        let got = claims::claim(state.service(), &claim, &ctx).await?;
        answer.next = Some(
            got.map(|c| super::workers::claim_response(&c).map(Box::new))
                .transpose()?,
        );
    }
    Ok(answer)
}

/// Fail a job (retried while `retryable` and the budget allows).
#[utoipa::path(operation_id = "jobs_fail", post, path = "/v1/jobs/{id}/fail", tag = "jobs", request_body = FailRequest,
    params(("id" = uuid::Uuid, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = JobCommandResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn fail(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: JsonBody<FailRequest>,
) -> Result<Json<JobCommandResponse>, ApiError> {
    let next = next_claim(body.value.worker_id.as_deref(), body.value.next.clone())?;
    let cmd = JobCommand::Fail(body.value.into());
    let answer = run(
        &state,
        &headers,
        &format!("POST /v1/jobs/{id}/fail"),
        &body.raw,
        id,
        cmd,
    )
    .await?;
    with_next(&state, &headers, answer, next).await
}

/// Renew the lease of the worker holding the job (`job_assigned` carries the first
/// deadline; renewals move it without an event). Progress reports renew too.
#[utoipa::path(operation_id = "jobs_heartbeat", post, path = "/v1/jobs/{id}/heartbeat", tag = "jobs", request_body = JobHeartbeatRequest,
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = JobHeartbeatResponse, description = "Renewed"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "INVALID_TRANSITION: that worker does not hold the job (with its status)"),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    PathId(id): PathId,
    body: JsonBody<JobHeartbeatRequest>,
) -> Result<Json<JobHeartbeatResponse>, ApiError> {
    let deadline = leases::heartbeat(state.service(), id, &body.value.worker_id).await?;
    Ok(Json(JobHeartbeatResponse {
        job_id: id,
        worker_id: body.value.worker_id,
        lease_expires_at: jobsource_app::read::view::timestamp(deadline),
    }))
}

/// Cancel a waiting or pending job.
#[utoipa::path(operation_id = "jobs_cancel", post, path = "/v1/jobs/{id}/cancel", tag = "jobs", request_body = Option<CancelRequest>,
    params(("id" = uuid::Uuid, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = JobCommandResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: OptionalJsonBody<CancelRequest>,
) -> Result<Json<JobCommandResponse>, ApiError> {
    let cmd = JobCommand::Cancel(body.value.into());
    run(
        &state,
        &headers,
        &format!("POST /v1/jobs/{id}/cancel"),
        &body.raw,
        id,
        cmd,
    )
    .await
}

/// Read a job: the hot read model, or its history folded to a version or a time.
#[utoipa::path(operation_id = "jobs_get", get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path), JobGetParams, ("X-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = schema::JobView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    PathId(id): PathId,
    QueryParams(q): QueryParams<JobGetParams>,
    headers: HeaderMap,
) -> Result<Json<JobView>, ApiError> {
    // A position that is there must be valid, even when the historical read ignores it.
    super::min_position(&headers, q.min_position.as_deref())?;
    if q.as_of_version.is_some() || q.as_of.is_some() {
        let as_of = q
            .as_of
            .as_deref()
            .map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| ApiError::malformed("as_of", format!("not an RFC 3339 time: {e}")))
            })
            .transpose()?;
        let history = state.service().history(&job_stream(id)).await?;
        let envelopes = history
            .iter()
            .map(|e| &e.envelope)
            .take_while(|e| q.as_of_version.is_none_or(|v| e.version <= v))
            .take_while(|e| as_of.is_none_or(|t| e.occurred_at <= t));
        return JobView::fold(envelopes)
            .map(Json)
            .ok_or_else(|| ApiError::job_not_found(id));
    }
    let reached = read_your_writes(&state, &headers, q.min_position.as_deref(), Model::Hot).await?;
    let view = match state.read().job(id).await? {
        Some(view) if reached => Some(view),
        // Not seen yet, or behind the client's position: fold the stream.
        _ => jobsource_app::read::fold::job(state.service().store().as_ref(), id).await?,
    };
    let mut view = view.ok_or_else(|| ApiError::job_not_found(id))?;
    if view.lease_expires_at.is_some() {
        // The read model holds the assignment's first deadline; renewals live in the
        // store's lease index.
        let lease = state
            .service()
            .store()
            .lease(&job_stream(id))
            .await
            .map_err(ServiceError::from)?;
        if let Some(lease) = lease {
            if lease.attempt == view.attempt {
                view.lease_expires_at = Some(jobsource_app::read::view::timestamp(
                    jobsource_app::service::queue::time_of(lease.deadline_ms),
                ));
            }
        }
    }
    Ok(Json(view))
}

/// List jobs (oldest first) with filters and a cursor.
#[utoipa::path(operation_id = "jobs_list", get, path = "/v1/jobs", tag = "jobs",
    params(JobListParams, ("X-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = schema::Page<schema::JobView>), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<JobListParams>,
    headers: HeaderMap,
) -> Result<Json<Page<JobView>>, ApiError> {
    let query = JobQuery {
        status: q.status,
        job_type: q.job_type,
        workflow_id: q.workflow_id,
        limit: limit(q.limit, 50, 500)?,
        after: q.cursor,
    };
    read_your_writes(&state, &headers, q.min_position.as_deref(), Model::Lists).await?;
    Ok(Json(state.read().jobs(&query).await?))
}

/// Job counts by status and type, for jobs created in the timeframe.
#[utoipa::path(operation_id = "jobs_stats", get, path = "/v1/jobs/stats", tag = "jobs", params(StatsParams),
    responses((status = 200, body = schema::JobStats), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<StatsParams>,
    headers: HeaderMap,
) -> Result<Json<JobStats>, ApiError> {
    let since = since(q.timeframe.as_deref())?;
    read_your_writes(&state, &headers, q.min_position.as_deref(), Model::Lists).await?;
    Ok(Json(state.read().job_stats(since).await?))
}

/// The job's events (its audit trail), in version order.
#[utoipa::path(operation_id = "jobs_events", get, path = "/v1/jobs/{id}/events", tag = "jobs", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = StreamEvents), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<StreamEvents>, ApiError> {
    super::stream_events(&state, job_stream(id), ApiError::job_not_found(id)).await
}

//! `/v1/workers/{worker_id}/claim`: a worker takes the next job it can run.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::dto::{ClaimRequest, ClaimResponse};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{CommandHeaders, JsonBody};
use crate::AppState;
use jobsource_app::read::JobView;
use jobsource_app::service::claims::{self, Claim};
use jobsource_app::service::ServiceError;

/// Claim the highest-priority ready job (FIFO within a priority) this worker can run:
/// its capabilities cover the job's, its `gpu_memory` covers the job's; the assignment
/// starts a lease (`lease_seconds`). With `wait_ms`, waits for a job instead of a 204.
///
/// `Idempotency-Key` is not applied here: a claim targets whichever job is next, so a
/// retried claim may rightly get a different one.
#[utoipa::path(operation_id = "workers_claim", post, path = "/v1/workers/{worker_id}/claim", tag = "workers", request_body = ClaimRequest,
    params(("worker_id" = String, Path)),
    responses((status = 200, body = ClaimResponse, description = "A job, now assigned to the worker"),
        (status = 204, description = "Nothing pending that this worker can run"),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn claim(
    State(state): State<AppState>,
    Path(worker_id): Path<String>,
    headers: CommandHeaders,
    body: JsonBody<ClaimRequest>,
) -> Result<Response, ApiError> {
    let mut ctx = headers.context("claim", &body.raw);
    ctx.idempotency = None;
    ctx.expected_version = None;
    let request = to_claim(worker_id, body.value)?;
    match claims::claim(state.service(), &request, &ctx).await? {
        None => {
            metrics::counter!(jobsource_app::metrics::CLAIMS, "result" => "empty").increment(1);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Some(got) => {
            metrics::counter!(jobsource_app::metrics::CLAIMS, "result" => "claimed").increment(1);
            Ok(Json(claim_response(&got)?).into_response())
        }
    }
}

/// The service's claim from a claim body (negative numbers: 422 naming the field).
pub fn to_claim(worker_id: String, body: ClaimRequest) -> Result<Claim, ServiceError> {
    let non_negative = |field: &str, v: Option<i64>| -> Result<Option<u64>, ServiceError> {
        v.map(|n| {
            u64::try_from(n).map_err(|_| ServiceError::validation(field, "must not be negative"))
        })
        .transpose()
    };
    if !jobsource_domain::validate::is_valid_machine_id(&worker_id) {
        return Err(ServiceError::validation(
            "worker_id",
            jobsource_domain::validate::machine_id_message(&worker_id),
        ));
    }
    if !jobsource_domain::validate::is_valid_machine_id(&body.machine_id) {
        return Err(ServiceError::validation(
            "machine_id",
            jobsource_domain::validate::machine_id_message(&body.machine_id),
        ));
    }
    if body.capabilities.len() > jobsource_domain::validate::MAX_CAPABILITIES {
        return Err(ServiceError::validation(
            "capabilities",
            format!(
                "at most {} capabilities",
                jobsource_domain::validate::MAX_CAPABILITIES
            ),
        ));
    }
    if let Some(c) = body
        .capabilities
        .iter()
        .find(|c| !jobsource_domain::validate::is_valid_capability(c))
    {
        return Err(ServiceError::validation(
            "capabilities",
            format!(
                "{c:?} must match {}",
                jobsource_domain::validate::CAPABILITY_PATTERN
            ),
        ));
    }
    Ok(Claim {
        worker_id,
        machine_id: body.machine_id,
        capabilities: body.capabilities,
        gpu_memory: body.gpu_memory,
        lease_seconds: non_negative("lease_seconds", body.lease_seconds)?,
        wait_ms: non_negative("wait_ms", body.wait_ms)?,
    })
}

/// The answer for a claimed job: its view (with the lease), version and position.
pub fn claim_response(got: &claims::Claimed) -> Result<ClaimResponse, ApiError> {
    let job = JobView::fold(got.history.iter().map(|e| &e.envelope))
        .ok_or_else(|| ApiError::job_not_found(got.state.id))?;
    Ok(ClaimResponse {
        job,
        version: got.version(),
        position: got.position().map(|p| p.to_string()),
    })
}

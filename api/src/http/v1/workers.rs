//! `/v1/workers/{worker_id}/claim`: a worker takes the next job it can run.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobsource_domain::job_stream;

use super::dto::{ClaimRequest, ClaimResponse};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{CommandHeaders, JsonBody};
use crate::http::AppState;
use crate::read::JobView;
use crate::service::claims::{self, Claim};

/// Claim the highest-priority pending job (FIFO within a priority) this worker can run.
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
    let request = Claim {
        worker_id,
        machine_id: body.value.machine_id,
        capabilities: body.value.capabilities,
    };
    let Some(outcome) = claims::claim(state.service(), &**state.read(), &request, &ctx).await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let history = state
        .service()
        .history(&job_stream(outcome.state.id))
        .await?;
    let job = JobView::fold(
        history
            .iter()
            .map(|e| &e.envelope)
            .take_while(|e| e.version <= outcome.version),
    )
    .ok_or_else(|| ApiError::job_not_found(outcome.state.id))?;
    Ok(Json(ClaimResponse {
        job,
        version: outcome.version,
        position: outcome.position.map(|p| p.to_string()),
    })
    .into_response())
}

//! `/v1/workflows`: create and cancel workflows, read them with their steps.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use jobsource_domain::workflow::{Workflow, WorkflowCommand};
use jobsource_domain::workflow_stream;

use super::dto::*;
use super::{limit, read_your_writes, since};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{CommandHeaders, JsonBody, OptionalJsonBody, PathId, QueryParams};
use crate::{schema, AppState};
use jobsource_app::read::{Model, Page, WorkflowQuery, WorkflowStats, WorkflowView};
use jobsource_app::service::Outcome;

fn answer(outcome: &Outcome<Workflow>) -> WorkflowCommandResponse {
    let def = outcome.state.definition.as_ref();
    WorkflowCommandResponse {
        workflow_id: outcome.state.id,
        job_ids: def.map(|d| d.job_ids.clone()).unwrap_or_default(),
        status: outcome
            .state
            .status
            .map_or("unknown", |s| s.as_str())
            .to_owned(),
        version: outcome.version,
        position: outcome.position.map(|p| p.to_string()),
        replayed: outcome.replayed,
    }
}

/// Create a workflow; answers once every step's job exists.
#[utoipa::path(operation_id = "workflows_create", post, path = "/v1/workflows", tag = "workflows", request_body = CreateWorkflowRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = WorkflowCommandResponse), (status = 200, body = WorkflowCommandResponse, description = "Replayed"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    headers: CommandHeaders,
    body: JsonBody<CreateWorkflowRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = headers.context("POST /v1/workflows", &body.raw);
    let outcome = state
        .service()
        .create_workflow(body.value.into(), &ctx)
        .await?;
    let status = if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(answer(&outcome))))
}

/// Cancel a workflow (its waiting and pending jobs are cancelled by the orchestrator).
#[utoipa::path(operation_id = "workflows_cancel", post, path = "/v1/workflows/{id}/cancel", tag = "workflows", request_body = Option<CancelRequest>,
    params(("id" = uuid::Uuid, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = WorkflowCommandResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: OptionalJsonBody<CancelRequest>,
) -> Result<Json<WorkflowCommandResponse>, ApiError> {
    let ctx = headers.context(&format!("POST /v1/workflows/{id}/cancel"), &body.raw);
    let outcome = state
        .service()
        .workflow(
            id,
            WorkflowCommand::Cancel {
                reason: body.value.reason,
            },
            &ctx,
        )
        .await?;
    Ok(Json(answer(&outcome)))
}

/// A workflow with its steps and progress.
#[utoipa::path(operation_id = "workflows_get", get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = uuid::Uuid, Path), MinPositionParams, ("X-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = schema::WorkflowView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    PathId(id): PathId,
    QueryParams(q): QueryParams<MinPositionParams>,
    headers: HeaderMap,
) -> Result<Json<WorkflowView>, ApiError> {
    let reached = read_your_writes(&state, &headers, q.min_position.as_deref(), Model::Hot).await?;
    let view = match state.read().workflow(id).await? {
        Some(view) if reached => Some(view),
        // Not seen yet, or behind the client's position: fold the streams.
        _ => jobsource_app::read::fold::workflow(state.service().store().as_ref(), id).await?,
    };
    view.map(Json)
        .ok_or_else(|| ApiError::workflow_not_found(id))
}

/// List workflows (oldest first).
#[utoipa::path(operation_id = "workflows_list", get, path = "/v1/workflows", tag = "workflows",
    params(WorkflowListParams, ("X-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = schema::Page<schema::WorkflowView>), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<WorkflowListParams>,
    headers: HeaderMap,
) -> Result<Json<Page<WorkflowView>>, ApiError> {
    let query = WorkflowQuery {
        status: q.status,
        limit: limit(q.limit, 50, 500)?,
        after: q.cursor,
    };
    read_your_writes(&state, &headers, q.min_position.as_deref(), Model::Lists).await?;
    Ok(Json(state.read().workflows(&query).await?))
}

/// Workflow counts by status.
#[utoipa::path(operation_id = "workflows_stats", get, path = "/v1/workflows/stats", tag = "workflows", params(StatsParams),
    responses((status = 200, body = schema::WorkflowStats), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<StatsParams>,
    headers: HeaderMap,
) -> Result<Json<WorkflowStats>, ApiError> {
    let since = since(q.timeframe.as_deref())?;
    read_your_writes(&state, &headers, q.min_position.as_deref(), Model::Lists).await?;
    Ok(Json(state.read().workflow_stats(since).await?))
}

/// The workflow's events, in version order.
#[utoipa::path(operation_id = "workflows_events", get, path = "/v1/workflows/{id}/events", tag = "workflows", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = StreamEvents), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<StreamEvents>, ApiError> {
    super::stream_events(
        &state,
        workflow_stream(id),
        ApiError::workflow_not_found(id),
    )
    .await
}

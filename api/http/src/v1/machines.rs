//! `/v1/machines`: register machines, take their heartbeats, read them (hot model, list)
//! and their audit trail.
//!
//! `last_heartbeat_at` in every answer is the machine's last-seen time from the heartbeat
//! store (it moves on heartbeats that change nothing, which write no event).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::Utc;
use jobsource_domain::machine::{Machine, MachineStatus};
use jobsource_domain::{machine_stream, DomainError};

use super::dto::{MinPositionParams, StreamEvents};
use super::machine_dto::*;
use super::{limit, read_your_writes};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{CommandHeaders, JsonBody, OptionalJsonBody, QueryParams};
use crate::{schema, AppState};
use jobsource_app::read::view::timestamp;
use jobsource_app::read::{MachineQuery, MachineView, Model, Page};
use jobsource_app::service::machines::{self, check_machine_id, from_millis};
use jobsource_app::service::{Outcome, ServiceError};

fn status_of(outcome: &Outcome<Machine>) -> String {
    outcome
        .state
        .status
        .map_or("unknown", MachineStatus::as_str)
        .to_owned()
}

/// Register a machine (again with the same data: 200, nothing recorded; with new
/// capabilities, GPU memory or address: 200 and `machine_registered` again).
#[utoipa::path(operation_id = "machines_register", post, path = "/v1/machines", tag = "machines", request_body = RegisterMachineRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body: the original answer")),
    responses(
        (status = 201, body = MachineCommandResponse, description = "Registered"),
        (status = 200, body = MachineCommandResponse, description = "Already registered (updated when the data changed), or replayed"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "VALIDATION_FAILED or IDEMPOTENCY_KEY_REUSED"),
        (status = 503, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    headers: CommandHeaders,
    body: JsonBody<RegisterMachineRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = headers.context("POST /v1/machines", &body.raw);
    let outcome = machines::register(
        state.service(),
        &**state.seen(),
        body.value.into(),
        &ctx,
        Utc::now(),
    )
    .await?;
    // Created: this request's events began the stream.
    let created = !outcome.replayed
        && outcome.position.is_some()
        && usize::try_from(outcome.version).is_ok_and(|v| v == outcome.event_ids.len());
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(MachineCommandResponse {
            machine_id: outcome.state.id.clone(),
            status: status_of(&outcome),
            version: outcome.version,
            position: outcome.position.map(|p| p.to_string()),
            replayed: outcome.replayed,
        }),
    ))
}

/// A heartbeat: records the time, and events only for what changed (status, workers).
#[utoipa::path(operation_id = "machines_heartbeat", post, path = "/v1/machines/{id}/heartbeat", tag = "machines",
    request_body = Option<HeartbeatRequest>,
    params(("id" = String, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = HeartbeatResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "MACHINE_NOT_FOUND"),
        (status = 409, body = ErrorBody, description = "VERSION_CONFLICT"),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: CommandHeaders,
    body: OptionalJsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    check_machine_id(&id)?;
    let command = body.value.into_command().map_err(ServiceError::from)?;
    let ctx = headers.context(&format!("POST /v1/machines/{id}/heartbeat"), &body.raw);
    let (outcome, seen_ms) = machines::heartbeat(
        state.service(),
        &**state.seen(),
        &id,
        command,
        &ctx,
        Utc::now(),
    )
    .await?;
    Ok(Json(HeartbeatResponse {
        machine_id: id,
        status: status_of(&outcome),
        version: outcome.version,
        position: outcome.position.map(|p| p.to_string()),
        last_heartbeat_at: from_millis(seen_ms).map(timestamp),
        replayed: outcome.replayed,
    }))
}

/// Read a machine: the hot read model, or its folded history while the model has not
/// seen it yet.
#[utoipa::path(operation_id = "machines_get", get, path = "/v1/machines/{id}", tag = "machines",
    params(("id" = String, Path), MinPositionParams, ("X-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = schema::MachineView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "MACHINE_NOT_FOUND"),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<MinPositionParams>,
    headers: HeaderMap,
) -> Result<Json<MachineView>, ApiError> {
    check_machine_id(&id)?;
    read_your_writes(&state, &headers, q.min_position.as_deref(), Model::Hot).await?;
    let view = match state.read().machine(&id).await? {
        Some(v) => v,
        None => {
            let history = state.service().history(&machine_stream(&id)).await?;
            MachineView::fold(history.iter().map(|e| &e.envelope))
                .ok_or_else(|| ApiError::machine_not_found(&id))?
        }
    };
    let seen = state.seen().last_seen(&id).await?;
    Ok(Json(view.with_last_seen(seen)))
}

/// List machines by id, optionally by status.
#[utoipa::path(operation_id = "machines_list", get, path = "/v1/machines", tag = "machines",
    params(MachineListParams, ("X-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = schema::Page<schema::MachineView>), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<MachineListParams>,
    headers: HeaderMap,
) -> Result<Json<Page<MachineView>>, ApiError> {
    if let Some(s) = &q.status {
        MachineStatus::parse("status", s)
            .map_err(|e| ServiceError::from(DomainError::Validation(vec![e])))?;
    }
    let query = MachineQuery {
        status: q.status,
        limit: limit(q.limit, 50, 500)?,
        after: q.cursor,
    };
    read_your_writes(&state, &headers, q.min_position.as_deref(), Model::Lists).await?;
    let page = state.read().machines(&query).await?;
    let ids: Vec<String> = page.items.iter().map(|m| m.machine_id.clone()).collect();
    let seen = state.seen().last_seen_many(&ids).await?;
    Ok(Json(Page {
        items: page
            .items
            .into_iter()
            .zip(seen)
            .map(|(m, s)| m.with_last_seen(s))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// The machine's events (its audit trail), in version order.
#[utoipa::path(operation_id = "machines_events", get, path = "/v1/machines/{id}/events", tag = "machines",
    params(("id" = String, Path)),
    responses((status = 200, body = StreamEvents), (status = 404, body = ErrorBody, description = "MACHINE_NOT_FOUND"),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StreamEvents>, ApiError> {
    check_machine_id(&id)?;
    super::stream_events(
        &state,
        machine_stream(&id),
        ApiError::machine_not_found(&id),
    )
    .await
}

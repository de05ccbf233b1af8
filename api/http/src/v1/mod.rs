//! The native `/v1` surface (SPEC section 6.1): thin handlers over the command/query layer.

pub mod admin;
pub mod dto;
pub mod events;
pub mod jobs;
pub mod machine_dto;
pub mod machines;
pub mod webhooks;
pub mod workers;
pub mod workflows;

use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use jobsource_eventstore::Position;

use super::error::ApiError;
use super::AppState;
use jobsource_app::read::{wait_for, Model};

/// The `/v1` routes (mounted under `/v1` by [`super::app`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/stats", get(jobs::stats))
        .route("/jobs/{id}", get(jobs::get))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/jobs/{id}/assign", post(jobs::assign))
        .route("/jobs/{id}/progress", post(jobs::progress))
        .route("/jobs/{id}/complete", post(jobs::complete))
        .route("/jobs/{id}/fail", post(jobs::fail))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/heartbeat", post(jobs::heartbeat))
        .route("/workers/{worker_id}/claim", post(workers::claim))
        .route("/workflows", post(workflows::create).get(workflows::list))
        .route("/workflows/stats", get(workflows::stats))
        .route("/workflows/{id}", get(workflows::get))
        .route("/workflows/{id}/events", get(workflows::events))
        .route("/workflows/{id}/cancel", post(workflows::cancel))
        .route("/machines", post(machines::register).get(machines::list))
        .route("/machines/{id}", get(machines::get))
        .route("/machines/{id}/heartbeat", post(machines::heartbeat))
        .route("/machines/{id}/events", get(machines::events))
        .route("/events", get(events::page))
        .route("/projections", get(admin::projections))
        .route("/projections/{name}/rebuild", post(admin::rebuild))
        .route("/projections/{name}/resume", post(admin::resume))
        .route("/webhooks/deliveries", get(webhooks::list))
        .route("/webhooks/deliveries/{id}", get(webhooks::get))
        .route("/webhooks/deliveries/{id}/retry", post(webhooks::retry))
}

/// The position a query must wait for: `min_position` or `X-Min-Position`.
pub fn min_position(
    headers: &HeaderMap,
    param: Option<&str>,
) -> Result<Option<Position>, ApiError> {
    let parse = |field: &str, raw: &str| {
        raw.trim().parse::<Position>().map_err(|e| {
            ApiError::malformed(field, format!("not a position (<partition>@<id>): {e}"))
        })
    };
    // An empty header counts as absent; a header that is there must be valid even when
    // the parameter wins.
    let header = match headers.get("x-min-position") {
        None => None,
        Some(v) => match v.to_str().map(str::trim) {
            Ok("") => None,
            Ok(s) => Some(parse("X-Min-Position", s)?),
            Err(_) => {
                return Err(ApiError::malformed(
                    "X-Min-Position",
                    "must be visible ASCII",
                ))
            }
        },
    };
    match param {
        Some(p) => Ok(Some(parse("min_position", p)?)),
        None => Ok(header),
    }
}

/// Read-your-writes: waits (bounded) for `model` to pass the requested position. Returns
/// whether it did (`true` also when no position was asked for).
pub async fn read_your_writes(
    state: &AppState,
    headers: &HeaderMap,
    param: Option<&str>,
    model: Model,
) -> Result<bool, ApiError> {
    match min_position(headers, param)? {
        None => Ok(true),
        Some(p) => {
            if p.partition >= state.service().store().partitions() {
                return Err(ApiError::malformed(
                    "min_position",
                    format!("partition {} does not exist", p.partition),
                ));
            }
            Ok(wait_for(
                &**state.read(),
                model,
                p,
                state.config().min_position_timeout,
            )
            .await?)
        }
    }
}

/// `timeframe=hour|day|week` -> the earliest creation time counted.
pub fn since(timeframe: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let span = match timeframe {
        None | Some("all") => return Ok(None),
        Some("hour") => chrono::Duration::hours(1),
        Some("day") => chrono::Duration::days(1),
        Some("week") => chrono::Duration::weeks(1),
        Some(other) => {
            return Err(ApiError::Service(
                jobsource_app::service::ServiceError::validation(
                    "timeframe",
                    format!("must be hour, day or week, not {other:?}"),
                ),
            ))
        }
    };
    Ok(Some(Utc::now() - span))
}

/// A page size within `1..=max` (default `default`).
pub fn limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::Service(
            jobsource_app::service::ServiceError::validation(
                "limit",
                format!("must be between 1 and {max}"),
            ),
        )),
    }
}

/// The envelopes of `stream` (an aggregate's audit trail); `not_found` when it is empty.
pub async fn stream_events(
    state: &AppState,
    stream: String,
    not_found: ApiError,
) -> Result<axum::Json<dto::StreamEvents>, ApiError> {
    let history = state.service().history(&stream).await?;
    if history.is_empty() {
        return Err(not_found);
    }
    Ok(axum::Json(dto::StreamEvents {
        stream,
        events: history.into_iter().map(dto::EventView::from).collect(),
    }))
}

/// How long a read-your-writes wait may take before the query answers anyway.
pub const DEFAULT_MIN_POSITION_TIMEOUT: Duration = Duration::from_secs(5);

//! `/v1/webhooks/deliveries`: the delivery records, and re-queueing a dead-lettered one.

use axum::extract::State;
use axum::Json;
use jobsource_domain::DomainError;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::limit;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{PathId, QueryParams};
use crate::{schema, AppState};
use jobsource_app::read::Page;
use jobsource_app::service::ServiceError;
use jobsource_app::webhooks::{Delivery, DeliveryQuery, DeliveryStatus, DeliveryStore, Requeue};

/// `GET /v1/webhooks/deliveries` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// `pending`, `delivered` or `dead`.
    pub status: Option<String>,
    /// Page size (1..=500, default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

fn deliveries(state: &AppState) -> Result<&dyn DeliveryStore, ApiError> {
    state.webhooks().map(|s| &**s).ok_or_else(|| {
        ApiError::Service(ServiceError::Unavailable {
            backend: "webhooks",
            message: "no webhook delivery store is configured".into(),
        })
    })
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound {
        code: "DELIVERY_NOT_FOUND",
        message: format!("webhook delivery {id} not found"),
    }
}

/// Webhook deliveries, oldest event first, with every attempt.
#[utoipa::path(operation_id = "webhooks_list", get, path = "/v1/webhooks/deliveries", tag = "webhooks",
    params(DeliveryListParams),
    responses((status = 200, body = schema::Page<schema::Delivery>), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<DeliveryListParams>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<DeliveryStatus>()
                .map_err(|e| ApiError::Service(ServiceError::validation("status", e)))?,
        ),
    };
    let query = DeliveryQuery {
        status,
        limit: limit(q.limit, 50, 500)?,
        after: q.cursor,
    };
    Ok(Json(deliveries(&state)?.list(&query).await?))
}

/// One webhook delivery with every attempt.
#[utoipa::path(operation_id = "webhooks_get", get, path = "/v1/webhooks/deliveries/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = schema::Delivery), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<Delivery>, ApiError> {
    deliveries(&state)?
        .get(id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

/// Re-queue a dead-lettered delivery: due now, with a fresh round of attempts (its
/// attempt history is kept). 409 `INVALID_TRANSITION` when it is not dead.
#[utoipa::path(operation_id = "webhooks_retry", post, path = "/v1/webhooks/deliveries/{id}/retry", tag = "webhooks",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = schema::Delivery), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<Delivery>, ApiError> {
    match deliveries(&state)?.requeue(id).await? {
        Requeue::Requeued(d) => Ok(Json(*d)),
        Requeue::NotFound => Err(not_found(id)),
        Requeue::NotDead(status) => Err(ApiError::Service(ServiceError::Domain(
            DomainError::InvalidTransition {
                kind: "delivery",
                command: "retry",
                status: status.as_str().to_owned(),
            },
        ))),
    }
}

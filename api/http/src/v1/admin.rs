//! `/v1/projections`: projection status and rebuilds.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use jobsource_eventstore::Offset;

use super::dto::{ProjectionsResponse, RebuildRequest, RebuildResponse, ResumeResponse};
use crate::error::{ApiError, ErrorBody};
use crate::extract::OptionalJsonBody;
use crate::AppState;

/// Status of every projection (and the orchestrator) per partition.
#[utoipa::path(operation_id = "admin_projections", get, path = "/v1/projections", tag = "projections",
    responses((status = 200, body = ProjectionsResponse), (status = 503, body = ErrorBody)))]
pub async fn projections(
    State(state): State<AppState>,
) -> Result<Json<ProjectionsResponse>, ApiError> {
    let projections = state.projection_status().await?;
    Ok(Json(ProjectionsResponse { projections }))
}

/// Rebuild a projection beside the live one and swap when caught up.
#[utoipa::path(operation_id = "admin_rebuild", post, path = "/v1/projections/{name}/rebuild", tag = "projections",
    request_body = Option<RebuildRequest>, params(("name" = String, Path)),
    responses((status = 202, body = RebuildResponse), (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: OptionalJsonBody<RebuildRequest>,
) -> Result<(StatusCode, Json<RebuildResponse>), ApiError> {
    let from: Offset = match body.value.from.as_deref() {
        None | Some("") => Offset::Start,
        Some(s) => s
            .parse()
            .map_err(|e| ApiError::malformed("from", format!("not an offset: {e}")))?,
    };
    state.read().rebuild(&name, from.clone()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RebuildResponse {
            projection: name,
            from: from.to_string(),
            status_url: "/v1/projections".into(),
        }),
    ))
}

/// Clear the stalls of a consumer (any of them: projections, `webhooks`, `orchestrator`,
/// `seed_bus`, `memory`) once the cause is fixed; the running loop picks it up within
/// about a second.
#[utoipa::path(operation_id = "admin_resume", post, path = "/v1/projections/{name}/resume", tag = "projections",
    params(("name" = String, Path, description = "Consumer name")),
    responses((status = 200, body = ResumeResponse), (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ResumeResponse>, ApiError> {
    let Some(consumers) = state.consumers() else {
        return Err(ApiError::malformed(
            "name",
            "this server runs no consumer registry",
        ));
    };
    let resumed = consumers.resume(&name).await?;
    Ok(Json(ResumeResponse {
        projection: name,
        resumed_partitions: resumed,
    }))
}

//! `GET /v1/events`: audit/replay pages over the whole log.

use axum::extract::State;
use axum::Json;
use jobsource_eventstore::Offset;

use super::dto::{EventPageResponse, EventView, EventsParams};
use super::limit;
use crate::error::{ApiError, ErrorBody};
use crate::extract::QueryParams;
use crate::AppState;
use jobsource_app::read::events::EventFilter;

/// A page of events after an offset, filtered, with the cursor of the next page: from the
/// archive, then the live log for what is not archived yet (embedded: the log).
#[utoipa::path(operation_id = "events_page", get, path = "/v1/events", tag = "audit", params(EventsParams),
    responses((status = 200, body = EventPageResponse), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn page(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<EventsParams>,
) -> Result<Json<EventPageResponse>, ApiError> {
    let offset: Offset = match q.after.as_deref() {
        None | Some("") => Offset::Start,
        Some(s) => s
            .parse()
            .map_err(|e| ApiError::malformed("after", format!("not an offset: {e}")))?,
    };
    let store = state.service().store();
    let cursor = store
        .resolve(&offset)
        .await
        .map_err(jobsource_app::service::ServiceError::from)?;
    let filter = EventFilter {
        types: q.types,
        stream: q.stream,
        correlation_id: q.correlation_id,
    };
    let limit = limit(q.limit, 100, 1000)?;
    let page = state.read().events(cursor, &filter, limit).await?;
    Ok(Json(EventPageResponse {
        events: page.events.into_iter().map(EventView::from).collect(),
        next_cursor: page.next.to_string(),
        more: page.more,
    }))
}

//! `/health` (SPEC section 6.3 shape), `/health/ready` and `/metrics`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::AppState;

/// The health document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// Per-component checks: `redis`, `postgres` (`connected`, `disconnected: ...` or
    /// `embedded`), `message_bus`, `job_service`, `workflow_service` (`{status}`) and
    /// `projections` (state per projection).
    #[schema(value_type = Object)]
    pub checks: BTreeMap<String, Value>,
    /// When checked (RFC 3339).
    pub timestamp: String,
}

async fn check(state: &AppState) -> (bool, Health) {
    let mut checks = BTreeMap::new();
    let mut healthy = true;
    let embedded = state.read().mode() == "embedded";
    for (name, result) in state.read().health().await {
        let v = match result {
            Ok(()) => "connected".to_owned(),
            Err(e) => {
                healthy = false;
                format!("disconnected: {e}")
            }
        };
        checks.insert(name.to_owned(), Value::from(v));
    }
    if embedded {
        checks.insert(
            "redis".into(),
            Value::from("embedded (in-memory, nothing persists)"),
        );
        checks.insert(
            "postgres".into(),
            Value::from("embedded (in-memory, nothing persists)"),
        );
        checks.remove("store");
    }
    let store_ok = state.service().store().head().await.is_ok();
    healthy &= store_ok;
    let service = |ok: bool| json!({"status": if ok { "healthy" } else { "unhealthy" }});
    checks.insert("message_bus".into(), service(store_ok));
    checks.insert("job_service".into(), service(healthy));
    checks.insert("workflow_service".into(), service(healthy));
    let mut projections = BTreeMap::<String, String>::new();
    if let Ok(rows) = state.projection_status().await {
        for row in rows {
            let slot = projections
                .entry(row.projection)
                .or_insert_with(|| "running".into());
            if row.state != "running" && slot != "stalled" {
                *slot = row.state;
            }
        }
    }
    checks.insert("projections".into(), json!(projections));
    let status = if healthy { "healthy" } else { "unhealthy" };
    (
        healthy,
        Health {
            status: status.into(),
            checks,
            timestamp: jobsource_app::read::view::timestamp(chrono::Utc::now()),
        },
    )
}

/// Liveness and backend checks.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (ok, doc) = check(&state).await;
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(doc))
}

/// Readiness: backends reachable and not shutting down. The body carries jobsource's
/// `ready` and the seed's `{status: "ready"|"not_ready", timestamp}`.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"ready": false, "status": "not_ready", "reason": "shutting down",
                "timestamp": now()}),
            ),
        );
    }
    let (ok, _) = check(&state).await;
    if ok {
        (
            StatusCode::OK,
            Json(json!({"ready": true, "status": "ready", "timestamp": now()})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "status": "not_ready",
                "reason": "a backend is unavailable (see /health)", "timestamp": now()})),
        )
    }
}

/// The seed's timestamp: RFC 3339 with milliseconds.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `GET /metrics` (Prometheus text format).
pub async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        jobsource_app::metrics::render(),
    )
}

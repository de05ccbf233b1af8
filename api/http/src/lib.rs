//! The HTTP layer: [`app`] builds the router over an [`AppState`].
//!
//! Middleware, outermost first: correlation id (read or generated, echoed, attached to
//! every log line of the request), API-key auth on `/v1` (and `/api`), the body limit.
//! Handlers are thin: they parse, call the command/query layer, and shape the answer;
//! errors become responses in one place ([`error`]).

pub mod error;
pub mod extract;
pub mod health;
pub mod number;
pub mod openapi;
pub mod schema;
pub mod seed;
pub mod v1;
pub mod ws;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::Instrument;
use uuid::Uuid;

use self::error::ApiError;
use self::extract::CorrelationId;
use jobsource_app::read::ReadSide;
use jobsource_app::service::Service;
use jobsource_app::status::ProjectionStatus;

/// Lag counted in status rows before it shows as the cap.
const LAG_CAP: usize = 10_000;

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Accepted API keys; empty = no auth.
    pub api_keys: Vec<String>,
    /// Request body limit in bytes (default 1 MiB).
    pub body_limit: usize,
    /// Longest read-your-writes wait.
    pub min_position_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            api_keys: Vec::new(),
            body_limit: 1024 * 1024,
            min_position_timeout: v1::DEFAULT_MIN_POSITION_TIMEOUT,
        }
    }
}

struct Inner {
    service: Arc<Service>,
    read: Arc<dyn ReadSide>,
    config: HttpConfig,
    shutting_down: AtomicBool,
    webhooks: std::sync::OnceLock<Arc<dyn jobsource_app::webhooks::DeliveryStore>>,
    live: std::sync::OnceLock<Arc<jobsource_app::live::LiveFeed>>,
    seen: std::sync::OnceLock<Arc<dyn jobsource_app::service::machines::SeenStore>>,
    consumers: std::sync::OnceLock<Arc<jobsource_app::consumers::Consumers>>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    /// State over a command service and a read side.
    pub fn new(service: Arc<Service>, read: Arc<dyn ReadSide>, config: HttpConfig) -> Self {
        AppState {
            inner: Arc::new(Inner {
                service,
                read,
                config,
                shutting_down: AtomicBool::new(false),
                webhooks: std::sync::OnceLock::new(),
                live: std::sync::OnceLock::new(),
                seen: std::sync::OnceLock::new(),
                consumers: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The command layer.
    pub fn service(&self) -> &Arc<Service> {
        &self.inner.service
    }

    /// The query layer.
    pub fn read(&self) -> &Arc<dyn ReadSide> {
        &self.inner.read
    }

    /// Attaches the live feed (`/ws`). Set once.
    pub fn with_live(self, feed: Arc<jobsource_app::live::LiveFeed>) -> Self {
        if self.inner.live.set(feed).is_err() {
            tracing::warn!("live feed already attached; keeping the first");
        }
        self
    }

    /// The live feed, when attached.
    pub fn live(&self) -> Option<&Arc<jobsource_app::live::LiveFeed>> {
        self.inner.live.get()
    }

    /// Attaches the webhook delivery records (`/v1/webhooks/deliveries`). Set once: a
    /// later call (on this state or a clone) leaves the first store in place.
    pub fn with_webhooks(self, store: Arc<dyn jobsource_app::webhooks::DeliveryStore>) -> Self {
        if self.inner.webhooks.set(store).is_err() {
            tracing::warn!("webhook delivery store already attached; keeping the first");
        }
        self
    }

    /// The webhook delivery records, when attached.
    pub fn webhooks(&self) -> Option<&Arc<dyn jobsource_app::webhooks::DeliveryStore>> {
        self.inner.webhooks.get()
    }

    /// Attaches the machines' last-seen store (`/v1/machines`). Set once; without it the
    /// state uses an in-memory one (embedded mode, tests).
    pub fn with_seen(self, seen: Arc<dyn jobsource_app::service::machines::SeenStore>) -> Self {
        if self.inner.seen.set(seen).is_err() {
            tracing::warn!("machine last-seen store already attached; keeping the first");
        }
        self
    }

    /// The machines' last-seen store.
    pub fn seen(&self) -> &Arc<dyn jobsource_app::service::machines::SeenStore> {
        self.inner
            .seen
            .get_or_init(|| Arc::new(jobsource_app::service::machines::MemorySeenStore::new()))
    }

    /// HTTP settings.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// Marks the server as draining (`/health/ready` answers 503 from now on).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether [`AppState::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Attaches the registry of consumers (status and resume of every subscriber). Set
    /// once.
    pub fn with_consumers(self, consumers: Arc<jobsource_app::consumers::Consumers>) -> Self {
        if self.inner.consumers.set(consumers).is_err() {
            tracing::warn!("consumer registry already attached; keeping the first");
        }
        self
    }

    /// The registry of consumers, when attached.
    pub fn consumers(&self) -> Option<&Arc<jobsource_app::consumers::Consumers>> {
        self.inner.consumers.get()
    }

    /// Status of every consumer per partition: from the registry when attached (else the
    /// read side's own rows), with the progress of the rebuilds running in this process.
    pub async fn projection_status(
        &self,
    ) -> Result<Vec<ProjectionStatus>, jobsource_app::service::ServiceError> {
        let mut rows = match self.consumers() {
            Some(c) => c.status(LAG_CAP).await,
            None => self.read().projections().await?,
        };
        for (name, progress) in self.read().rebuilds() {
            for row in rows.iter_mut().filter(|r| r.projection == name) {
                if row.state != "stalled" {
                    row.state = "rebuilding".into();
                }
                row.rebuild = Some(progress.clone());
            }
        }
        Ok(rows)
    }
}

const CORRELATION: HeaderName = HeaderName::from_static("x-correlation-id");

/// Reads (or generates) the correlation id, runs the request inside a span carrying it,
/// and echoes it on the response.
async fn correlation(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&CORRELATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let span = tracing::info_span!("request", correlation_id = %id,
        method = %req.method(), path = %req.uri().path());
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(status = response.status().as_u16(), "answered");
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION, v);
    }
    response
}

/// Counts requests by method, route template (not the raw path: ids would explode the
/// label set) and status, and records their latency.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    metrics::histogram!(jobsource_app::metrics::HTTP_DURATION, "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed());
    metrics::counter!(jobsource_app::metrics::HTTP_REQUESTS, "method" => method, "route" => route,
        "status" => response.status().as_u16().to_string())
    .increment(1);
    response
}

/// `Authorization: Bearer <key>` or `X-API-Key: <key>` when keys are configured.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = &state.config().api_keys;
    if keys.is_empty() {
        return next.run(req).await;
    }
    let headers = req.headers();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let ok = [bearer, api_key]
        .into_iter()
        .flatten()
        .fold(false, |ok, k| ok | known_key(keys, k));
    if ok {
        next.run(req).await
    } else if req.uri().path().starts_with("/api/") {
        // The seed surface answers in its own error shape.
        seed::unauthorized()
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// Whether `given` is one of `keys`, in time that does not depend on where they differ:
/// both sides are hashed (equal lengths), compared with a XOR fold, and every key is
/// checked (no early exit that would tell which prefix matched).
fn known_key(keys: &[String], given: &str) -> bool {
    use sha2::{Digest, Sha256};
    let given = Sha256::digest(given.as_bytes());
    keys.iter().fold(false, |found, known| {
        let known = Sha256::digest(known.as_bytes());
        let diff = known
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found | (diff == 0)
    })
}

#[cfg(test)]
mod key_tests {
    #[test]
    fn api_keys_match_exactly() {
        let keys = vec!["s3cret".to_owned(), "other-key".to_owned()];
        assert!(super::known_key(&keys, "s3cret"));
        assert!(super::known_key(&keys, "other-key"));
        assert!(!super::known_key(&keys, "s3cre"));
        assert!(!super::known_key(&keys, "s3cret "));
        assert!(!super::known_key(&keys, ""));
        assert!(!super::known_key(&[], "s3cret"));
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "NOT_FOUND",
        message: "no such route".into(),
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .nest("/v1", v1::routes())
        .nest("/api", seed::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(protected)
        .route("/health", get(health::health))
        .route("/health/ready", get(health::ready))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(health::metrics))
        .route("/ws", get(ws::handler))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config().body_limit))
        .route_layer(middleware::from_fn(track))
        .layer(middleware::from_fn(correlation))
        .with_state(state)
}

#[cfg(test)]
mod machine_tests;
#[cfg(test)]
mod tests;

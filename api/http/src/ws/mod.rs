//! `GET /ws`: live job, workflow and machine events over WebSocket (the seed's protocol).
//!
//! Client messages (text, JSON): `{"type":"subscribe_job","job_id":..}`,
//! `subscribe_workflow` (`workflow_id`), `subscribe_machine` (`machine_id`) and the
//! matching `unsubscribe_job|unsubscribe_workflow|unsubscribe_machine`.
//!
//! Server messages: `{"type":<event type>,"timestamp":<ms>,"job_id"|"workflow_id":..,
//! "data":<envelope>}`, routed as the seed's broadcaster does:
//! - a job event goes to clients subscribed to that job, and to every client with no job
//!   subscription at all (the seed's "monitor" clients);
//! - it also goes to clients subscribed to the machine the job is (or was, for its
//!   terminal event) assigned to; those messages carry `machine_id` too;
//! - a workflow event goes to clients subscribed to that workflow;
//! - a machine's own event (`machine_registered`, `machine_status_changed`,
//!   `worker_status_changed`) goes to clients subscribed to that machine, as
//!   `{"type","timestamp","machine_id","data"}`.
//!
//! Beyond the seed: each (un)subscription is acknowledged
//! (`{"type":"subscribed"|"unsubscribed","job_id"|..:..}`), so a client knows from which
//! event on it is covered, and a malformed message gets `{"type":"error","message":..}`
//! without closing anything.
//!
//! Liveness and back-pressure: the server pings every [`LiveConfig::ping_every`] and drops
//! a client that has not answered within [`LiveConfig::pong_timeout`]. Each client has its
//! own bounded outgoing queue ([`LiveConfig::buffer`] messages) drained by a writer task;
//! when the queue is full, or the client fell that far behind the shared feed, the client
//! is closed with code 1008 ("too slow") — nobody else ever waits for it. When the server
//! shuts down, clients are closed with 1001 ("going away").
//!
//! Auth: `/ws` sits outside the `/v1` auth layer (SPEC 6.3 scopes auth to `/v1` and
//! `/api`), but with API keys configured the upgrade needs one anyway — the live feed
//! shows every job — via `Authorization: Bearer`, `X-API-Key`, or `?api_key=` (browsers
//! cannot set headers on a WebSocket).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::error::ApiError;
use super::AppState;
use jobsource_app::live::{LiveConfig, LiveEvent, LiveFeed};

mod subscriptions;
use subscriptions::*;

/// Gauge of open WebSocket connections.
pub const CONNECTIONS: &str = "jobsource_websocket_connections";

/// Largest client message accepted (subscriptions are tiny).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// How long a closing client's writer may take to get its close frame out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Close code for a client that fell behind (policy violation).
const TOO_SLOW: u16 = 1008;

/// Close code for a server going down.
const GOING_AWAY: u16 = 1001;

/// Query of the upgrade request.
#[derive(Debug, Default, Deserialize)]
pub struct WsQuery {
    /// API key (for clients that cannot send headers).
    pub api_key: Option<String>,
}

/// Upgrades to a WebSocket (after the API-key check, when keys are configured).
pub async fn handler(
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !authorized(&state, &headers, q.api_key.as_deref()) {
        return ApiError::Unauthorized.into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(feed) = state.live().cloned() else {
        return ApiError::NotFound {
            code: "NOT_FOUND",
            message: "live updates are not enabled on this server".into(),
        }
        .into_response();
    };
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| client(socket, feed))
}

/// The same keys and headers as the `/v1` auth layer, plus `?api_key=`.
fn authorized(state: &AppState, headers: &HeaderMap, query_key: Option<&str>) -> bool {
    let keys = &state.config().api_keys;
    if keys.is_empty() {
        return true;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    [
        header("authorization").and_then(|v| v.strip_prefix("Bearer ")),
        header("x-api-key"),
        query_key,
    ]
    .into_iter()
    .flatten()
    .any(|k| keys.iter().any(|known| known == k.trim()))
}

/// Holds one unit of the connections gauge for as long as it lives.
struct Connected(metrics::Gauge);

impl Connected {
    fn open() -> Self {
        let gauge = metrics::gauge!(CONNECTIONS);
        gauge.increment(1.0);
        Connected(gauge)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// How a client's session ended.
#[derive(Debug)]
enum End {
    /// The client closed (or the connection failed): finish politely.
    Peer,
    /// The client stopped answering: drop the connection.
    Dead,
    /// The server closes it with this frame.
    Close(CloseFrame),
}

fn close_frame(code: u16, reason: &'static str) -> End {
    End::Close(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    })
}

/// Runs one client: a reader loop here, a writer task draining the bounded queue.
async fn client(socket: WebSocket, feed: Arc<LiveFeed>) {
    let _connected = Connected::open();
    let config = *feed.config();
    let (sink, stream) = socket.split();
    let (queue, outgoing) = mpsc::channel(config.buffer);
    let (close_tx, close_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write(sink, outgoing, close_rx));
    let end = session(stream, &queue, &feed, &config).await;
    match end {
        End::Peer => {
            drop(queue);
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        }
        End::Close(frame) => {
            if frame.code == TOO_SLOW {
                tracing::warn!("websocket client too slow; closing it");
            }
            let _ = close_tx.send(frame);
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        }
        End::Dead => tracing::info!("websocket client stopped answering pings; dropping it"),
    }
    writer.abort();
}

/// Queues `m` for the client; fails when its queue is full (too slow) or the writer is gone.
fn queue(out: &mpsc::Sender<Message>, m: Message) -> Result<(), End> {
    match out.try_send(m) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => {
            Err(close_frame(TOO_SLOW, "too slow: outgoing buffer full"))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(End::Peer),
    }
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

/// Reads the client, routes feed events, pings; returns how it ended.
async fn session(
    mut stream: SplitStream<WebSocket>,
    out: &mpsc::Sender<Message>,
    feed: &LiveFeed,
    config: &LiveConfig,
) -> End {
    let mut events = feed.subscribe();
    let mut closed = feed.closed();
    let mut subs = Subscriptions::default();
    let mut ping = tokio::time::interval_at(Instant::now() + config.ping_every, config.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set while a ping is unanswered: the moment the client is given up on.
    let mut pong_due: Option<Instant> = None;
    loop {
        let step = tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(t))) => queue(out, text(&subs.handle(t.as_str()))),
                Some(Ok(Message::Binary(_))) => {
                    queue(out, text(&error("binary messages are not supported; send JSON text".into())))
                }
                Some(Ok(Message::Pong(_))) => {
                    pong_due = None;
                    Ok(())
                }
                // Pings are answered by the library.
                Some(Ok(Message::Ping(_))) => Ok(()),
                Some(Ok(Message::Close(_))) | None => Err(End::Peer),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    Err(End::Peer)
                }
            },
            event = events.recv() => match event {
                Ok(e) => match subs.message(&e) {
                    Some(m) => queue(out, Message::Text(m)),
                    None => Ok(()),
                },
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "websocket client fell behind the live feed");
                    Err(close_frame(TOO_SLOW, "too slow: fell behind the live feed"))
                }
                Err(RecvError::Closed) => Err(close_frame(GOING_AWAY, "server shutting down")),
            },
            _ = closed.wait_for(|c| *c) => Err(close_frame(GOING_AWAY, "server shutting down")),
            _ = ping.tick() => {
                if pong_due.is_none() {
                    pong_due = Some(Instant::now() + config.pong_timeout);
                }
                queue(out, Message::Ping(Default::default()))
            }
            _ = sleep_until(pong_due) => Err(End::Dead),
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// Sleeps until `deadline`, forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Drains the queue into the socket, flushing once per batch; on `close`, sends that frame
/// (skipping whatever is still queued) and ends; when the queue ends, closes politely.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Message>,
    mut close: oneshot::Receiver<CloseFrame>,
) {
    loop {
        let next = tokio::select! {
            biased;
            frame = &mut close => {
                if let Ok(frame) = frame {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                return;
            }
            m = queue.recv() => m,
        };
        let Some(first) = next else {
            let _ = sink.close().await;
            return;
        };
        let sent = tokio::select! {
            biased;
            frame = &mut close => {
                if let Ok(frame) = frame {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                return;
            }
            r = send_batch(&mut sink, first, &mut queue) => r,
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn send_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    first: Message,
    queue: &mut mpsc::Receiver<Message>,
) -> Result<(), axum::Error> {
    sink.feed(first).await?;
    while let Ok(m) = queue.try_recv() {
        sink.feed(m).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobsource_eventstore::{Envelope, LogId, Position, RecordedEvent};
    use uuid::Uuid;

    fn live(stream: String, kind: &str, machine: Option<&str>) -> LiveEvent {
        let env = Envelope {
            event_id: Uuid::now_v7(),
            stream,
            version: 1,
            event_type: kind.into(),
            schema: 1,
            occurred_at: chrono::Utc::now(),
            correlation_id: "c".into(),
            causation_id: None,
            metadata: Default::default(),
            data: json!({}).into(),
        };
        let event = RecordedEvent {
            position: Position::new(0, LogId::new(1, 0)),
            envelope: env,
        };
        LiveEvent::new(event, machine.map(str::to_owned))
    }

    impl Subscriptions {
        fn message_json(&self, e: &LiveEvent) -> Option<Value> {
            self.message(e)
                .map(|m| serde_json::from_str(m.as_str()).expect("JSON"))
        }
    }

    #[test]
    fn machine_subscriptions_get_the_machines_own_events() {
        let mut s = Subscriptions::default();
        // Monitor clients (no subscription) do not get machine events.
        assert!(s
            .message_json(&live("machine-m1".into(), "machine_registered", None))
            .is_none());
        s.handle(&json!({"type": "subscribe_machine", "machine_id": "m1"}).to_string());
        for kind in [
            "machine_registered",
            "machine_status_changed",
            "worker_status_changed",
        ] {
            let m = s
                .message_json(&live("machine-m1".into(), kind, None))
                .unwrap();
            assert_eq!(m["type"], kind);
            assert_eq!(m["machine_id"], "m1");
            assert_eq!(m["data"]["stream"], "machine-m1");
        }
        assert!(s
            .message_json(&live("machine-m2".into(), "machine_registered", None))
            .is_none());
        s.handle(&json!({"type": "unsubscribe_machine", "machine_id": "m1"}).to_string());
        assert!(s
            .message_json(&live("machine-m1".into(), "worker_status_changed", None))
            .is_none());
    }

    #[test]
    fn routing_follows_the_seed() {
        let (a, b, w) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut s = Subscriptions::default();
        // No job subscription: every job event, no workflow event.
        assert!(s
            .message_json(&live(format!("job-{a}"), "job_submitted", None))
            .is_some());
        assert!(s
            .message_json(&live(format!("workflow-{w}"), "workflow_created", None))
            .is_none());
        assert_eq!(
            s.handle(&json!({"type": "subscribe_job", "job_id": a.to_string()}).to_string()),
            json!({"type": "subscribed", "job_id": a.to_string()})
        );
        let m = s
            .message_json(&live(format!("job-{a}"), "job_progress", None))
            .unwrap();
        assert_eq!(m["type"], "job_progress");
        assert_eq!(m["job_id"], a.to_string());
        assert_eq!(m["data"]["stream"], format!("job-{a}"));
        assert!(m["timestamp"].as_i64().unwrap() > 0);
        assert!(m.get("machine_id").is_none());
        assert!(s
            .message_json(&live(format!("job-{b}"), "job_progress", None))
            .is_none());
        s.handle(&json!({"type": "subscribe_machine", "machine_id": "m1"}).to_string());
        let m = s
            .message_json(&live(format!("job-{b}"), "job_progress", Some("m1")))
            .unwrap();
        assert_eq!(m["machine_id"], "m1");
        assert!(s
            .message_json(&live(format!("job-{b}"), "job_progress", Some("m2")))
            .is_none());
        s.handle(&json!({"type": "subscribe_workflow", "workflow_id": w.to_string()}).to_string());
        assert_eq!(
            s.message_json(&live(format!("workflow-{w}"), "workflow_created", None))
                .unwrap()["workflow_id"],
            w.to_string()
        );
        // Upper-case ids match the server's lowercase ones.
        let upper = a.to_string().to_uppercase();
        assert_eq!(
            s.handle(&json!({"type": "unsubscribe_job", "job_id": upper}).to_string()),
            json!({"type": "unsubscribed", "job_id": a.to_string()})
        );
        // Back to no job subscription: every job event again.
        assert!(s
            .message_json(&live(format!("job-{b}"), "job_progress", None))
            .is_some());
        assert_eq!(s.handle("{not json")["type"], "error");
        assert_eq!(s.handle(r#"{"type":"dance"}"#)["type"], "error");
        assert_eq!(s.handle(r#"{"type":"subscribe_job"}"#)["type"], "error");
        assert_eq!(
            s.handle(r#"{"type":"subscribe_job","job_id":42}"#)["type"],
            "error"
        );
        assert_eq!(s.handle("[]")["type"], "error");
    }

    #[tokio::test]
    async fn the_upgrade_needs_a_key_when_keys_are_configured() {
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use jobsource_eventstore::{EventStore, MemoryStore, StoreConfig};
        use tower::ServiceExt;

        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
        let service = Arc::new(jobsource_app::service::Service::new(store.clone(), None));
        let model = jobsource_app::read::memory::MemoryReadModel::new(store);
        let config = crate::HttpConfig {
            api_keys: vec!["k1".into()],
            ..Default::default()
        };
        let state = AppState::new(service, model, config).with_live(LiveFeed::new(8));
        let router = crate::app(state);
        let call = |uri: &str, header: Option<(&str, &str)>| {
            let mut req = Request::builder().uri(uri);
            if let Some((k, v)) = header {
                req = req.header(k, v);
            }
            router.clone().oneshot(req.body(Body::empty()).unwrap())
        };
        assert_eq!(
            call("/ws", None).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call("/ws?api_key=nope", None).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        // With a key, a plain GET (no upgrade) fails as a bad upgrade, not as auth.
        for (uri, header) in [
            ("/ws?api_key=k1", None),
            ("/ws", Some(("x-api-key", "k1"))),
            ("/ws", Some(("authorization", "Bearer k1"))),
        ] {
            let status = call(uri, header).await.unwrap().status();
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri} {header:?}");
            assert!(status.is_client_error(), "{uri} {header:?}: {status}");
        }
    }
}

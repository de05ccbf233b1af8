//! `GET /ws`: live job, workflow and machine events over WebSocket (the seed's protocol).
//!
//! Client messages: `{"type":"subscribe_job","job_id":..}`, `subscribe_workflow`
//! (`workflow_id`), `subscribe_machine` (`machine_id`) and the matching `unsubscribe_*`.
//! Server messages: `{"type":<event type>,"timestamp":<ms>,"job_id"|"workflow_id":..,
//! "data":<envelope>}` (machine subscribers also get `machine_id`). A client with no job
//! subscription receives every job event (the seed's "monitor" clients). Beyond the seed,
//! each (un)subscription is acknowledged (`{"type":"subscribed","job_id":..}`), so a client
//! knows from when it is covered, and a malformed message gets `{"type":"error",
//! "message":..}` without closing anything. The server pings every 25 s and closes a
//! client that did not answer the previous ping; a client that falls too far behind the
//! feed is closed with code 1008 ("too slow") — it never slows the others. With API keys
//! configured, the upgrade needs one (`Authorization`, `X-API-Key`, or `?api_key=` for
//! browsers, which cannot set headers on a WebSocket).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::AppState;
use crate::live::{LiveEvent, LiveFeed};

/// Gauge of open WebSocket connections.
pub const CONNECTIONS: &str = "jobsource_websocket_connections";

const PING_EVERY: Duration = Duration::from_secs(25);

/// Query of the upgrade request.
#[derive(Debug, Default, Deserialize)]
pub struct WsQuery {
    /// API key (for clients that cannot send headers).
    pub api_key: Option<String>,
}

/// Upgrades to a WebSocket.
pub async fn handler(
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let keys = &state.config().api_keys;
    if !keys.is_empty() {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let offered = [
            header("authorization").and_then(|v| v.strip_prefix("Bearer ")),
            header("x-api-key"),
            q.api_key.as_deref(),
        ];
        if !offered
            .into_iter()
            .flatten()
            .any(|k| keys.iter().any(|known| known == k.trim()))
        {
            return ApiError::Unauthorized.into_response();
        }
    }
    let Some(feed) = state.live().cloned() else {
        return ApiError::NotFound {
            code: "NOT_FOUND",
            message: "live updates are not enabled on this server".into(),
        }
        .into_response();
    };
    upgrade.on_upgrade(move |socket| client(socket, feed))
}

#[derive(Default)]
struct Subscriptions {
    jobs: HashSet<String>,
    workflows: HashSet<String>,
    machines: HashSet<String>,
}

impl Subscriptions {
    /// The message for `e`, when this client should get it.
    fn message(&self, e: &LiveEvent) -> Option<Value> {
        let env = &e.event.envelope;
        let timestamp = env.occurred_at.timestamp_millis();
        let data = serde_json::to_value(env).ok()?;
        if let Some(job) = e.job_id.map(|j| j.to_string()) {
            let by_job = self.jobs.is_empty() || self.jobs.contains(&job);
            let by_machine = e.machine_id.as_ref().filter(|m| self.machines.contains(*m));
            if by_job || by_machine.is_some() {
                let mut m = json!({"type": env.event_type, "timestamp": timestamp, "job_id": job, "data": data});
                if let (Some(machine), Some(o)) = (by_machine, m.as_object_mut()) {
                    o.insert("machine_id".into(), Value::from(machine.clone()));
                }
                return Some(m);
            }
        } else if let Some(w) = e.workflow_id.map(|w| w.to_string()) {
            if self.workflows.contains(&w) {
                return Some(
                    json!({"type": env.event_type, "timestamp": timestamp, "workflow_id": w, "data": data}),
                );
            }
        }
        None
    }

    /// Applies a client message; returns the reply.
    fn handle(&mut self, text: &str) -> Value {
        let msg: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return json!({"type": "error", "message": format!("not JSON: {e}")}),
        };
        let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
        let (set, field, subscribe) = match kind {
            "subscribe_job" => (&mut self.jobs, "job_id", true),
            "unsubscribe_job" => (&mut self.jobs, "job_id", false),
            "subscribe_workflow" => (&mut self.workflows, "workflow_id", true),
            "unsubscribe_workflow" => (&mut self.workflows, "workflow_id", false),
            "subscribe_machine" => (&mut self.machines, "machine_id", true),
            "unsubscribe_machine" => (&mut self.machines, "machine_id", false),
            other => {
                return json!({"type": "error", "message": format!(
                    "unknown message type {other:?}; expected subscribe_job, subscribe_workflow, subscribe_machine or unsubscribe_*"
                )})
            }
        };
        let Some(id) = msg
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return json!({"type": "error", "message": format!("{kind} needs a non-empty {field}")});
        };
        if subscribe {
            set.insert(id.to_owned());
        } else {
            set.remove(id);
        }
        let ack = if subscribe {
            "subscribed"
        } else {
            "unsubscribed"
        };
        json!({"type": ack, field: id})
    }
}

async fn send(socket: &mut WebSocket, v: &Value) -> bool {
    socket
        .send(Message::Text(Utf8Bytes::from(v.to_string())))
        .await
        .is_ok()
}

async fn client(mut socket: WebSocket, feed: Arc<LiveFeed>) {
    let connections = metrics::gauge!(CONNECTIONS);
    connections.increment(1.0);
    let mut events = feed.subscribe();
    let mut subs = Subscriptions::default();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut alive = true;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let reply = subs.handle(t.as_str());
                    if !send(&mut socket, &reply).await {
                        break;
                    }
                }
                Some(Ok(Message::Pong(_))) => alive = true,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            event = events.recv() => match event {
                Ok(e) => {
                    if let Some(m) = subs.message(&e) {
                        if !send(&mut socket, &m).await {
                            break;
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "websocket client too slow; closing it");
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: Utf8Bytes::from_static("too slow: fell behind the live feed"),
                        })))
                        .await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            _ = ping.tick() => {
                if !alive {
                    tracing::info!("websocket client missed a ping; closing it");
                    break;
                }
                alive = false;
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    connections.decrement(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobsource_eventstore::{Envelope, LogId, Position, RecordedEvent};
    use uuid::Uuid;

    fn live(stream: String, kind: &str, machine: Option<&str>) -> LiveEvent {
        let env = Envelope {
            event_id: Uuid::now_v7(),
            stream: stream.clone(),
            version: 1,
            event_type: kind.into(),
            schema: 1,
            occurred_at: chrono::Utc::now(),
            correlation_id: "c".into(),
            causation_id: None,
            metadata: Default::default(),
            data: json!({}),
        };
        LiveEvent {
            job_id: stream
                .strip_prefix("job-")
                .and_then(|s| Uuid::parse_str(s).ok()),
            workflow_id: stream
                .strip_prefix("workflow-")
                .and_then(|s| Uuid::parse_str(s).ok()),
            machine_id: machine.map(str::to_owned),
            event: RecordedEvent {
                position: Position::new(0, LogId::new(1, 0)),
                envelope: env,
            },
        }
    }

    #[test]
    fn routing_follows_the_seed() {
        let (a, b, w) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut s = Subscriptions::default();
        // No job subscription: every job event, no workflow event.
        assert!(s
            .message(&live(format!("job-{a}"), "job_submitted", None))
            .is_some());
        assert!(s
            .message(&live(format!("workflow-{w}"), "workflow_created", None))
            .is_none());
        assert_eq!(
            s.handle(&json!({"type": "subscribe_job", "job_id": a.to_string()}).to_string())
                ["type"],
            "subscribed"
        );
        assert!(s
            .message(&live(format!("job-{a}"), "job_progress", None))
            .is_some());
        assert!(s
            .message(&live(format!("job-{b}"), "job_progress", None))
            .is_none());
        s.handle(&json!({"type": "subscribe_machine", "machine_id": "m1"}).to_string());
        let m = s
            .message(&live(format!("job-{b}"), "job_progress", Some("m1")))
            .unwrap();
        assert_eq!(m["machine_id"], "m1");
        s.handle(&json!({"type": "subscribe_workflow", "workflow_id": w.to_string()}).to_string());
        assert_eq!(
            s.message(&live(format!("workflow-{w}"), "workflow_created", None))
                .unwrap()["workflow_id"],
            w.to_string()
        );
        assert_eq!(s.handle("{not json")["type"], "error");
        assert_eq!(s.handle(r#"{"type":"dance"}"#)["type"], "error");
        assert_eq!(s.handle(r#"{"type":"subscribe_job"}"#)["type"], "error");
    }
}

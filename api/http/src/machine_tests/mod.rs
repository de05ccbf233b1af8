//! Handler tests of `/v1/machines` through `tower::ServiceExt::oneshot` on the embedded
//! (in-memory) stack, and the timeout sweeper over the same stack.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::Utc;
use http_body_util::BodyExt;
use jobsource_eventstore::{EventStore, MemoryStore, StoreConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{app, AppState, HttpConfig};
use jobsource_app::read::memory::MemoryReadModel;
use jobsource_app::service::machines::sweeper::Sweeper;
use jobsource_app::service::machines::{MemorySeenStore, SeenStore};
use jobsource_app::service::Service;

struct TestApp {
    router: Router,
    model: Arc<MemoryReadModel>,
    service: Arc<Service>,
    seen: Arc<dyn SeenStore>,
}

fn test_app() -> TestApp {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig {
        partitions: 4,
        ..StoreConfig::default()
    }));
    let service = Arc::new(Service::new(store.clone(), None));
    let model = MemoryReadModel::new(store);
    let seen: Arc<dyn SeenStore> = Arc::new(MemorySeenStore::new());
    let state = AppState::new(service.clone(), model.clone(), HttpConfig::default())
        .with_seen(seen.clone());
    TestApp {
        router: app(state),
        model,
        service,
        seen,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }

    fn fields(&self) -> Vec<String> {
        self.body["error"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|f| f["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TestApp {
    async fn raw(&self, method: &str, uri: &str, body: Body) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer { status, body }
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.raw("POST", uri, Body::from(body.to_string())).await
    }

    /// A GET after the read model caught up.
    async fn get(&self, uri: &str) -> Answer {
        self.model.catch_up().await.unwrap();
        self.raw("GET", uri, Body::empty()).await
    }

    async fn event_types(&self, id: &str) -> Vec<String> {
        let a = self.get(&format!("/v1/machines/{id}/events")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn register_body(id: &str) -> Value {
    json!({"machine_id": id, "capabilities": ["upscale", "controlnet"], "gpu_memory": 24.0,
        "ip_address": "10.0.0.7"})
}

#[tokio::test]
async fn register_is_created_then_idempotent_then_updated() {
    let t = test_app();
    let a = t.post("/v1/machines", register_body("m1")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        (&a.body["machine_id"], &a.body["status"], &a.body["version"]),
        (&json!("m1"), &json!("online"), &json!(1))
    );
    assert!(a.body["position"].as_str().unwrap().contains('@'));
    let again = t.post("/v1/machines", register_body("m1")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["version"], 1);
    assert!(again.body["position"].is_null());
    let mut changed = register_body("m1");
    changed["gpu_memory"] = json!(48.0);
    let a = t.post("/v1/machines", changed).await;
    assert_eq!((a.status, &a.body["version"]), (StatusCode::OK, &json!(2)));
    assert_eq!(
        t.event_types("m1").await,
        ["machine_registered", "machine_registered"]
    );
    let view = t.get("/v1/machines/m1").await;
    assert_eq!(view.status, StatusCode::OK);
    assert_eq!(view.body["gpu_memory"], 48.0);
    assert_eq!(view.body["capabilities"], json!(["upscale", "controlnet"]));
    assert_eq!(view.body["ip_address"], "10.0.0.7");
    assert!(view.body["registered_at"].is_string());
    assert!(view.body["last_heartbeat_at"].is_string());
    assert_eq!(view.body["workers"], json!([]));
    assert_eq!(view.body["current_jobs"], json!([]));
}

#[tokio::test]
async fn heartbeats_record_events_only_on_change() {
    let t = test_app();
    t.post("/v1/machines", register_body("m1")).await;
    let job = uuid::Uuid::now_v7();
    let hb = json!({"workers": [
        {"worker_id": "w1", "status": "busy", "current_job_id": job},
        {"worker_id": "w0", "status": "idle"}]});
    let a = t.post("/v1/machines/m1/heartbeat", hb.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["version"], 3);
    assert!(a.body["last_heartbeat_at"].is_string());
    let first_seen = a.body["last_heartbeat_at"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // The same report again: nothing recorded, but the time moves.
    let a = t.post("/v1/machines/m1/heartbeat", hb).await;
    assert_eq!(
        (a.body["version"].as_u64(), a.body["position"].is_null()),
        (Some(3), true)
    );
    assert_ne!(a.body["last_heartbeat_at"], first_seen);
    // An empty body is a bare heartbeat.
    let a = t
        .raw("POST", "/v1/machines/m1/heartbeat", Body::empty())
        .await;
    assert_eq!((a.status, &a.body["version"]), (StatusCode::OK, &json!(3)));
    let a = t
        .post("/v1/machines/m1/heartbeat", json!({"status": "busy"}))
        .await;
    assert_eq!(
        (&a.body["status"], &a.body["version"]),
        (&json!("busy"), &json!(4))
    );
    assert_eq!(
        t.event_types("m1").await,
        [
            "machine_registered",
            "worker_status_changed",
            "worker_status_changed",
            "machine_status_changed"
        ]
    );
    let view = t.get("/v1/machines/m1").await.body;
    assert_eq!(view["status"], "busy");
    assert_eq!(
        view["workers"],
        json!([
            {"worker_id": "w0", "status": "idle", "current_job_id": null},
            {"worker_id": "w1", "status": "busy", "current_job_id": job},
        ])
    );
    assert_eq!(view["current_jobs"], json!([job]));
    assert_eq!(view["version"], 4);
}

#[tokio::test]
async fn unknown_machines_are_404() {
    let t = test_app();
    for a in [
        t.post("/v1/machines/nope/heartbeat", json!({})).await,
        t.get("/v1/machines/nope").await,
        t.get("/v1/machines/nope/events").await,
    ] {
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::NOT_FOUND, "MACHINE_NOT_FOUND")
        );
    }
    // A 404 heartbeat leaves no trace.
    assert_eq!(t.seen.last_seen("nope").await.unwrap(), None);
}

mod input_and_queries;

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

#[tokio::test]
async fn bad_input_is_rejected_naming_the_field_and_changes_nothing() {
    let t = test_app();
    t.post("/v1/machines", register_body("m1")).await;
    let seen = t.seen.last_seen("m1").await.unwrap();
    let many: Vec<Value> = (0..1025)
        .map(|i| json!({"worker_id": format!("w{i}"), "status": "idle"}))
        .collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/machines", register_body("bad id"), "machine_id"),
        ("/v1/machines", register_body("-x"), "machine_id"),
        (
            "/v1/machines",
            json!({"machine_id": "m2", "capabilities": [], "gpu_memory": -1}),
            "gpu_memory",
        ),
        (
            "/v1/machines",
            json!({"machine_id": "m2", "capabilities": [], "gpu_memory": 10001}),
            "gpu_memory",
        ),
        (
            "/v1/machines",
            json!({"machine_id": "m2", "capabilities": [], "ip_address": "nowhere"}),
            "ip_address",
        ),
        (
            "/v1/machines/m1/heartbeat",
            json!({"status": "sleeping"}),
            "status",
        ),
        (
            "/v1/machines/m1/heartbeat",
            json!({"workers": [{"worker_id": "w1", "status": "napping"}]}),
            "workers[0].status",
        ),
        (
            "/v1/machines/m1/heartbeat",
            json!({"workers": many}),
            "workers",
        ),
        (
            "/v1/machines/m1/heartbeat",
            json!({"workers": [{"worker_id": "w 1", "status": "idle"}]}),
            "workers[0].worker_id",
        ),
        ("/v1/machines/bad%20id/heartbeat", json!({}), "machine_id"),
    ];
    for (uri, body, field) in cases {
        let a = t.post(uri, body).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            "{uri} {field}: {}",
            a.body
        );
        assert!(a.fields().iter().any(|f| f == field), "{field}: {}", a.body);
    }
    for (uri, body) in [
        ("/v1/machines", "{not json"),
        ("/v1/machines/m1/heartbeat", "{\"status\": "),
        (
            "/v1/machines",
            r#"{"machine_id": "m3", "capabilities": [], "extra": 1}"#,
        ),
        (
            "/v1/machines/m1/heartbeat",
            r#"{"workers": [{"worker_id": "w", "status": "idle", "current_job_id": "x"}]}"#,
        ),
    ] {
        let a = t.raw("POST", uri, Body::from(body)).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, "MALFORMED_REQUEST"),
            "{body}"
        );
    }
    let a = t.get("/v1/machines?status=sleeping").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.fields(), ["status"]);
    let a = t.get("/v1/machines/bad%20id").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing changed: one event, the same last-seen time, no other machine.
    assert_eq!(t.event_types("m1").await, ["machine_registered"]);
    assert_eq!(t.seen.last_seen("m1").await.unwrap(), seen);
    let list = t.get("/v1/machines").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn list_filters_by_status_and_pages_by_id() {
    let t = test_app();
    for id in ["m3", "m1", "m2"] {
        t.post("/v1/machines", register_body(id)).await;
    }
    t.post("/v1/machines/m2/heartbeat", json!({"status": "error"}))
        .await;
    let ids = |a: &Answer| -> Vec<String> {
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["machine_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = t.get("/v1/machines").await;
    assert_eq!(ids(&all), ["m1", "m2", "m3"]);
    assert!(all.body["items"][0]["last_heartbeat_at"].is_string());
    assert_eq!(ids(&t.get("/v1/machines?status=error").await), ["m2"]);
    assert_eq!(
        ids(&t.get("/v1/machines?status=online").await),
        ["m1", "m3"]
    );
    let page = t.get("/v1/machines?limit=2").await;
    assert_eq!(ids(&page), ["m1", "m2"]);
    assert_eq!(page.body["next_cursor"], "m2");
    let rest = t.get("/v1/machines?limit=2&cursor=m2").await;
    assert_eq!(ids(&rest), ["m3"]);
    assert!(rest.body["next_cursor"].is_null());
}

#[tokio::test]
async fn get_folds_the_stream_before_the_read_model_has_it() {
    let t = test_app();
    t.post("/v1/machines", register_body("m1")).await;
    // No catch-up: the read model has not seen the machine.
    let a = t.raw("GET", "/v1/machines/m1", Body::empty()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        (&a.body["status"], &a.body["version"]),
        (&json!("online"), &json!(1))
    );
    assert!(a.body["last_heartbeat_at"].is_string());
}

#[tokio::test]
async fn the_sweeper_marks_silent_machines_offline_once_and_a_heartbeat_revives_them() {
    let t = test_app();
    t.post("/v1/machines", register_body("m1")).await;
    t.post("/v1/machines", register_body("m2")).await;
    let timeout = std::time::Duration::from_secs(60);
    let sweeper = Sweeper::new(t.service.clone(), t.seen.clone(), timeout);
    // Nothing is stale yet.
    assert!(sweeper
        .sweep_once(Utc::now())
        .await
        .unwrap()
        .marked
        .is_empty());
    let later = Utc::now() + chrono::Duration::seconds(120);
    // m2 heartbeats "later" (its time moves past the cutoff): only m1 is stale.
    t.seen.touch("m2", later.timestamp_millis()).await.unwrap();
    let report = sweeper.sweep_once(later).await.unwrap();
    assert_eq!(report.marked, ["m1"]);
    // Another sweeper (another instance) finds nothing left to do.
    let other = Sweeper::new(t.service.clone(), t.seen.clone(), timeout);
    assert!(other.sweep_once(later).await.unwrap().marked.is_empty());
    assert!(sweeper.sweep_once(later).await.unwrap().marked.is_empty());
    let events = t.get("/v1/machines/m1/events").await.body;
    let last = &events["events"][1];
    assert_eq!(last["type"], "machine_status_changed");
    assert_eq!(last["data"]["status"], "offline");
    assert_eq!(last["data"]["previous_status"], "online");
    assert!(last["data"]["details"]
        .as_str()
        .unwrap()
        .starts_with("no heartbeat for 1"));
    assert_eq!(last["metadata"]["actor"], "machine-sweeper");
    assert_eq!(t.get("/v1/machines/m1").await.body["status"], "offline");
    assert_eq!(
        t.get("/v1/machines?status=offline").await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A bare heartbeat brings it back online.
    let a = t.post("/v1/machines/m1/heartbeat", json!({})).await;
    assert_eq!(
        (&a.body["status"], &a.body["version"]),
        (&json!("online"), &json!(3))
    );
}

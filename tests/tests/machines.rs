//! End-to-end: the machine registry on `jobsource serve` over real Redis and PostgreSQL —
//! registration, heartbeats, the read models (Redis hash, PostgreSQL rows, the stream),
//! bad input, the timeout sweeper (alone and two racing), and `/ws` machine
//! subscriptions.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jobsource_app::service::machines::sweeper::Sweeper;
use jobsource_app::service::machines::{RedisSeenStore, SeenStore};
use jobsource_app::service::Service;
use jobsource_eventstore::{EventStore, RedisStore, StoreConfig};
use jobsource_tests::app::spawn_app_config;
use jobsource_tests::{redis_connection, redis_url, spawn_app, Answer, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn register_body(id: &str) -> Value {
    json!({"machine_id": id, "capabilities": ["upscale", "controlnet"], "gpu_memory": 24.0,
        "ip_address": "10.0.0.7"})
}

fn event_types(a: &Answer) -> Vec<String> {
    a.body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {}", a.body))
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// A second "instance" of the service on the same store: its own connection, locks and
/// heartbeat store, as another process would have.
async fn instance(app: &TestApp) -> (Arc<Service>, Arc<dyn SeenStore>) {
    let store = app.connect_store().await;
    let seen: Arc<dyn SeenStore> = Arc::new(RedisSeenStore::new(
        store.connection(),
        &app.prefix,
        store.partitions(),
    ));
    let store: Arc<dyn EventStore> = Arc::new(store);
    (Arc::new(Service::new(store, None)), seen)
}

#[tokio::test]
async fn register_heartbeat_and_read_every_model() {
    let app = spawn_app("machines_e2e").await;
    let a = app.post("/v1/machines", register_body("gpu-01")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        (&a.body["status"], &a.body["version"]),
        (&json!("online"), &json!(1))
    );
    // Again with the same data: 200, nothing recorded.
    let again = app.post("/v1/machines", register_body("gpu-01")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["version"], 1);
    assert!(again.body["position"].is_null());
    // Readable at once, even before the read model caught up (the stream is folded).
    let now = app.get("/v1/machines/gpu-01").await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.body);
    assert_eq!(now.body["version"], 1);

    let job = uuid::Uuid::now_v7();
    let hb = json!({"status": "busy", "workers": [
        {"worker_id": "w1", "status": "busy", "current_job_id": job},
        {"worker_id": "w0", "status": "idle"}]});
    let a = app.post("/v1/machines/gpu-01/heartbeat", hb.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        (&a.body["status"], &a.body["version"]),
        (&json!("busy"), &json!(4))
    );
    let position = a.str("position");
    let first_seen = a.str("last_heartbeat_at");
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The same report: no event, the time moves.
    let a = app.post("/v1/machines/gpu-01/heartbeat", hb).await;
    assert_eq!(a.body["version"], 4);
    assert!(a.body["position"].is_null());
    assert_ne!(a.str("last_heartbeat_at"), first_seen);
    let last_seen = a.str("last_heartbeat_at");
    // One worker changes: one event.
    let a = app
        .post(
            "/v1/machines/gpu-01/heartbeat",
            json!({"workers": [{"worker_id": "w0", "status": "offline"}]}),
        )
        .await;
    assert_eq!(a.body["version"], 5);
    let position_5 = a.str("position");
    let last_seen = a.body["last_heartbeat_at"]
        .as_str()
        .map_or(last_seen, str::to_owned);

    let trail = app.get("/v1/machines/gpu-01/events").await;
    assert_eq!(
        event_types(&trail),
        [
            "machine_registered",
            "machine_status_changed",
            "worker_status_changed",
            "worker_status_changed",
            "worker_status_changed"
        ]
    );
    assert!(trail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["stream"] == "machine-gpu-01" && e["data"]["machine_id"] == "gpu-01"));

    // The Redis read model (hot), once it passed the last event.
    let view = app
        .get(&format!("/v1/machines/gpu-01?min_position={position_5}"))
        .await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.body);
    let expected_workers = json!([
        {"worker_id": "w0", "status": "offline", "current_job_id": null},
        {"worker_id": "w1", "status": "busy", "current_job_id": job},
    ]);
    assert_eq!(view.body["status"], "busy");
    assert_eq!(view.body["version"], 5);
    assert_eq!(view.body["workers"], expected_workers);
    assert_eq!(view.body["current_jobs"], json!([job]));
    assert_eq!(view.body["capabilities"], json!(["upscale", "controlnet"]));
    assert_eq!(view.body["gpu_memory"], 24.0);
    assert_eq!(view.body["ip_address"], "10.0.0.7");
    assert_eq!(view.body["last_heartbeat_at"], last_seen.as_str());
    assert!(view.body["registered_at"].is_string() && view.body["updated_at"].is_string());

    // The PostgreSQL list shows the same machine.
    let list = app
        .get(&format!("/v1/machines?min_position={position_5}"))
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0], view.body, "list row = hot view");
    let busy = app
        .get(&format!("/v1/machines?status=busy&min_position={position}"))
        .await;
    assert_eq!(busy.body["items"].as_array().unwrap().len(), 1);
    let offline = app.get("/v1/machines?status=offline").await;
    assert!(offline.body["items"].as_array().unwrap().is_empty());

    // The keys and rows behind them.
    let mut redis = redis_connection(&redis_url()).await.unwrap();
    let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}:machine:gpu-01", app.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(hash["machine_id"], "gpu-01");
    assert_eq!(hash["version"], "5");
    let workers: Value = serde_json::from_str(&hash["workers"]).unwrap();
    assert_eq!(workers, expected_workers);
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{}:machines", app.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(members, ["gpu-01"]);
    let p = jobsource_eventstore::partition::partition_of("machine-gpu-01", 4);
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{}:{{p{p}}}:machines:seen", app.prefix))
        .arg("gpu-01")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(score.is_some());
    let pool = sqlx::PgPool::connect(app.database_url().unwrap())
        .await
        .unwrap();
    let (status, version, pos): (String, i64, String) =
        sqlx::query_as("SELECT status, version, position FROM machines WHERE id = 'gpu-01'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), version, pos), ("busy", 5, position_5));
    pool.close().await;

    // New capabilities: recorded again, status kept.
    let mut changed = register_body("gpu-01");
    changed["capabilities"] = json!(["upscale"]);
    let a = app.post("/v1/machines", changed).await;
    assert_eq!(
        (a.status, &a.body["status"], &a.body["version"]),
        (StatusCode::OK, &json!("busy"), &json!(6))
    );
    let view = app
        .get(&format!(
            "/v1/machines/gpu-01?min_position={}",
            a.str("position")
        ))
        .await;
    assert_eq!(view.body["capabilities"], json!(["upscale"]));
    assert_eq!(view.body["workers"], expected_workers);
    app.stop().await;
}

#[tokio::test]
async fn replayed_machine_models_equal_the_live_ones() {
    let app = spawn_app("machines_verify").await;
    let job = uuid::Uuid::now_v7();
    for id in ["v1", "v2", "v3"] {
        app.post("/v1/machines", register_body(id)).await;
        for (i, hb) in [
            json!({"workers": [{"worker_id": "w2", "status": "idle"},
                               {"worker_id": "w1", "status": "busy", "current_job_id": job}]}),
            json!({"status": "busy", "workers": [{"worker_id": "w2", "status": "busy",
                                                  "current_job_id": job}]}),
            json!({"workers": [{"worker_id": "w1", "status": "offline"}]}),
        ]
        .into_iter()
        .enumerate()
        {
            let a = app.post(&format!("/v1/machines/{id}/heartbeat"), hb).await;
            assert_eq!(a.status, StatusCode::OK, "{i}: {}", a.body);
        }
    }
    let mut changed = register_body("v2");
    changed["ip_address"] = json!("::1");
    app.post("/v1/machines", changed).await;
    let a = app
        .post("/v1/machines/v3/heartbeat", json!({"status": "error"}))
        .await;
    assert_eq!(a.body["status"], "error");
    // Both models have everything (positions of one partition; wait on every machine).
    for id in ["v1", "v2", "v3"] {
        let trail = app.get(&format!("/v1/machines/{id}/events")).await;
        let p = trail.body["events"].as_array().unwrap().last().unwrap()["position"]
            .as_str()
            .unwrap()
            .to_owned();
        app.get(&format!("/v1/machines/{id}?min_position={p}"))
            .await;
        app.get(&format!("/v1/machines?min_position={p}")).await;
    }
    let store = RedisStore::connect(
        &redis_url(),
        StoreConfig {
            prefix: app.prefix.clone(),
            partitions: 4,
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap();
    // Event by event (batch 1) and folded (batch 500) replays both match the live models.
    for batch in [1, 500] {
        let diff = jobsource_projections::redis::rebuild::verify(
            &store,
            store.connection(),
            &app.prefix,
            batch,
            10,
        )
        .await
        .unwrap();
        assert!(diff.is_empty(), "redis, batch {batch}: {diff:?}");
        let pool = sqlx::PgPool::connect(app.database_url().unwrap())
            .await
            .unwrap();
        let diff = jobsource_projections::rebuild::verify(
            &store,
            &pool,
            &jobsource_projections::PostgresReadModel,
            batch,
            10,
        )
        .await
        .unwrap();
        pool.close().await;
        assert!(diff.is_empty(), "postgres, batch {batch}: {diff:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_machines_and_bad_input_change_nothing() {
    let app = spawn_app("machines_bad_input").await;
    for a in [
        app.post("/v1/machines/ghost/heartbeat", json!({})).await,
        app.get("/v1/machines/ghost").await,
        app.get("/v1/machines/ghost/events").await,
    ] {
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::NOT_FOUND, "MACHINE_NOT_FOUND")
        );
    }
    let a = app.post("/v1/machines", register_body("m1")).await;
    let position = a.str("position");
    let before = app
        .get(&format!("/v1/machines/m1?min_position={position}"))
        .await
        .body;
    let many: Vec<Value> = (0..1025)
        .map(|i| json!({"worker_id": format!("w{i}"), "status": "idle"}))
        .collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/machines", register_body("no spaces"), "machine_id"),
        (
            "/v1/machines",
            json!({"machine_id": "m2", "capabilities": [], "gpu_memory": -0.5}),
            "gpu_memory",
        ),
        (
            "/v1/machines",
            json!({"machine_id": "m2", "capabilities": [], "gpu_memory": 20000}),
            "gpu_memory",
        ),
        (
            "/v1/machines/m1/heartbeat",
            json!({"status": "asleep"}),
            "status",
        ),
        (
            "/v1/machines/m1/heartbeat",
            json!({"workers": [{"worker_id": "w1", "status": "lazy"}]}),
            "workers[0].status",
        ),
        (
            "/v1/machines/m1/heartbeat",
            json!({"workers": many}),
            "workers",
        ),
        ("/v1/machines/m%20x/heartbeat", json!({}), "machine_id"),
    ];
    for (path, body, field) in cases {
        let a = app.post(path, body).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            "{path} {field}: {}",
            a.body
        );
        assert!(a.fields().iter().any(|f| f == field), "{field}: {}", a.body);
    }
    let malformed = app
        .client
        .post(format!("{}/v1/machines/m1/heartbeat", app.base))
        .header("content-type", "application/json")
        .body("{\"status\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let a = app.get("/v1/machines?status=asleep").await;
    assert_eq!(
        (a.status, a.fields()),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["status".to_owned()])
    );
    // Nothing changed: same view (same last-seen time), one event, one machine.
    let after = app.get("/v1/machines/m1").await.body;
    assert_eq!(after, before);
    assert_eq!(
        event_types(&app.get("/v1/machines/m1/events").await),
        ["machine_registered"]
    );
    let list = app
        .get(&format!("/v1/machines?min_position={position}"))
        .await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_silent_machine_times_out_and_a_heartbeat_brings_it_back() {
    let app = spawn_app_config("machines_timeout", |c| {
        c.machine_timeout = Duration::from_secs(1);
    })
    .await;
    app.post("/v1/machines", register_body("m1")).await;
    // A worker of m1 holds a job with a long lease.
    let job = app.submit(json!({"type": "upscale"})).await;
    let claim = app
        .post(
            "/v1/workers/w1/claim",
            json!({"machine_id": "m1", "capabilities": ["upscale"], "lease_seconds": 3600}),
        )
        .await;
    assert_eq!(claim.status, StatusCode::OK, "{}", claim.body);
    assert_eq!(claim.body["job"]["id"], job.as_str());
    let view = app
        .eventually("/v1/machines/m1", |v| v["status"] == "offline")
        .await;
    // Its lease expired with the machine, not an hour later.
    let trail = app
        .eventually(&format!("/v1/jobs/{job}/events"), |t| {
            t["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["type"] == "job_lease_expired"))
        })
        .await;
    let expired = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "job_lease_expired")
        .unwrap()
        .clone();
    assert!(expired.to_string().contains("m1"), "{expired}");
    assert_eq!(view["version"], 2);
    let trail = app.get("/v1/machines/m1/events").await;
    assert_eq!(
        event_types(&trail),
        ["machine_registered", "machine_status_changed"]
    );
    let offline = &trail.body["events"][1];
    assert_eq!(offline["data"]["status"], "offline");
    assert_eq!(offline["data"]["previous_status"], "online");
    let details = offline["data"]["details"].as_str().unwrap();
    assert!(
        details.starts_with("no heartbeat for ") && details.ends_with('s'),
        "{details}"
    );
    assert_eq!(offline["metadata"]["actor"], "machine-sweeper");
    let a = app.post("/v1/machines/m1/heartbeat", json!({})).await;
    assert_eq!(
        (&a.body["status"], &a.body["version"]),
        (&json!("online"), &json!(3))
    );
    // ... and, silent again, it times out again (once more, not twice).
    app.eventually("/v1/machines/m1", |v| {
        v["version"] == 4 && v["status"] == "offline"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let trail = app.get("/v1/machines/m1/events").await;
    assert_eq!(trail.body["events"].as_array().unwrap().len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn two_sweepers_racing_write_one_offline_event_per_machine() {
    // The server's own sweeper waits 60 s: only the two below act.
    let app = spawn_app("machines_race").await;
    let ids: Vec<String> = (0..8).map(|i| format!("race-{i}")).collect();
    for id in &ids {
        let a = app.post("/v1/machines", register_body(id)).await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    let (service_a, seen_a) = instance(&app).await;
    let (service_b, seen_b) = instance(&app).await;
    let timeout = Duration::from_secs(60);
    for round in 1..=3i64 {
        let a = Sweeper::new(service_a.clone(), seen_a.clone(), timeout);
        let b = Sweeper::new(service_b.clone(), seen_b.clone(), timeout);
        let later = chrono::Utc::now() + chrono::Duration::minutes(5 * round);
        let (ra, rb) = tokio::join!(a.sweep_once(later), b.sweep_once(later));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let mut marked: Vec<String> = ra.marked.iter().chain(&rb.marked).cloned().collect();
        marked.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(
            marked, expected,
            "round {round}: each machine marked exactly once"
        );
        for id in &ids {
            let trail = app.get(&format!("/v1/machines/{id}/events")).await;
            let offline = event_types(&trail)
                .iter()
                .filter(|t| *t == "machine_status_changed")
                .count();
            // Rounds after the first: back online (one change) and offline again.
            assert_eq!(offline, 2 * round as usize - 1, "round {round} {id}");
        }
        // Bring them back for the next round (heartbeats at the round's time).
        for id in &ids {
            seen_a
                .touch(id, later.timestamp_millis() + 1)
                .await
                .unwrap();
            let a = app
                .post(&format!("/v1/machines/{id}/heartbeat"), json!({}))
                .await;
            assert_eq!(a.body["status"], "online", "{}", a.body);
        }
    }
    app.stop().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text message.
async fn read(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn ws_machine_subscriptions_get_the_machines_own_events() {
    let app = spawn_app("machines_ws").await;
    let url = format!("{}/ws", app.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(
        json!({"type": "subscribe_machine", "machine_id": "m-ws"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut got: Vec<Value> = Vec::new();
    assert_eq!(read(&mut ws).await["type"], "subscribed");
    app.post("/v1/machines", register_body("m-ws")).await;
    app.post("/v1/machines", register_body("m-other")).await;
    app.post(
        "/v1/machines/m-ws/heartbeat",
        json!({"status": "busy", "workers": [{"worker_id": "w1", "status": "idle"}]}),
    )
    .await;
    while got.len() < 3 {
        got.push(read(&mut ws).await);
    }
    let types: Vec<&str> = got.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "machine_registered",
            "machine_status_changed",
            "worker_status_changed"
        ]
    );
    assert!(got
        .iter()
        .all(|m| m["machine_id"] == "m-ws" && m["data"]["stream"] == "machine-m-ws"));
    app.stop().await;
}

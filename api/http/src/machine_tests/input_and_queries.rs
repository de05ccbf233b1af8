//! Machines over HTTP: bad input, lists, lookups before the read model, the sweeper.

use super::*;

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

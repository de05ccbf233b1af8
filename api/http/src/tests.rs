//! Handler tests through `tower::ServiceExt::oneshot` on the embedded (in-memory) stack.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use jobsource_eventstore::{EventStore, MemoryStore, StoreConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{app, AppState, HttpConfig};
use jobsource_app::read::memory::MemoryReadModel;
use jobsource_app::service::Service;

struct TestApp {
    router: Router,
    model: Arc<MemoryReadModel>,
}

fn test_app_with(config: HttpConfig) -> TestApp {
    test_app_on(4, config)
}

fn test_app_on(partitions: u32, config: HttpConfig) -> TestApp {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig {
        partitions,
        ..StoreConfig::default()
    }));
    let service = Arc::new(Service::new(store.clone(), None));
    let model = MemoryReadModel::new(store);
    let state = AppState::new(service, model.clone(), config);
    TestApp {
        router: app(state),
        model,
    }
}

fn test_app() -> TestApp {
    test_app_with(HttpConfig::default())
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl TestApp {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        self.raw(
            req.header("content-type", "application/json")
                .body(body)
                .unwrap(),
        )
        .await
    }

    async fn raw(&self, req: Request<Body>) -> Answer {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.call("POST", uri, Some(body), &[]).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.model.catch_up().await.unwrap();
        self.call("GET", uri, None, &[]).await
    }

    async fn submit(&self, body: Value) -> String {
        let a = self.post("/v1/jobs", body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body["job_id"].as_str().unwrap().to_owned()
    }
}

fn error_code(a: &Answer) -> &str {
    a.body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn job_lifecycle_through_the_api() {
    let t = test_app();
    let a = t
        .post("/v1/jobs", json!({"type": "upscale", "priority": 70}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["status"], "pending");
    assert_eq!(a.body["version"], 1);
    assert!(a.body["position"].as_str().unwrap().contains('@'));
    let id = a.body["job_id"].as_str().unwrap().to_owned();
    let a = t
        .post(
            &format!("/v1/jobs/{id}/assign"),
            json!({"worker_id": "w1", "machine_id": "m1"}),
        )
        .await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (StatusCode::OK, Some("assigned"))
    );
    let a = t
        .post(
            &format!("/v1/jobs/{id}/progress"),
            json!({"progress": 40, "stage": "render"}),
        )
        .await;
    assert_eq!(a.body["status"], "running");
    let a = t
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"result": {"url": "x"}}),
        )
        .await;
    assert_eq!(
        (a.body["status"].as_str(), a.body["version"].as_u64()),
        (Some("completed"), Some(4))
    );
    let a = t.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["status"], "completed");
    assert_eq!(a.body["result"]["url"], "x");
    assert_eq!(a.body["priority"], 70);
    assert_eq!(a.body["worker_id"], "w1");
    assert_eq!(a.body["requirements"]["capabilities"], json!(["upscale"]));
    // The audit trail: four envelopes in version order.
    let a = t.get(&format!("/v1/jobs/{id}/events")).await;
    let types: Vec<&str> = a.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "job_submitted",
            "job_assigned",
            "job_progress",
            "job_completed"
        ]
    );
    // Time travel: version 2 and before the first event.
    let a = t.get(&format!("/v1/jobs/{id}?as_of_version=2")).await;
    assert_eq!(
        (a.body["status"].as_str(), a.body["version"].as_u64()),
        (Some("assigned"), Some(2))
    );
    let a = t
        .get(&format!("/v1/jobs/{id}?as_of=2000-01-01T00:00:00Z"))
        .await;
    assert_eq!(error_code(&a), "JOB_NOT_FOUND");
    let a = t
        .get(&format!(
            "/v1/jobs/{id}?as_of={}",
            urlencode(&chrono::Utc::now().to_rfc3339())
        ))
        .await;
    assert_eq!(a.body["status"], "completed");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn retries_until_terminal_failure() {
    let t = test_app();
    let id = t.submit(json!({"type": "upscale", "max_retries": 1})).await;
    let fail = json!({"error": {"code": "OOM", "message": "out of memory"}});
    t.post(
        &format!("/v1/jobs/{id}/assign"),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    let a = t.post(&format!("/v1/jobs/{id}/fail"), fail.clone()).await;
    assert_eq!(a.body["status"], "pending", "first failure retries");
    t.post(
        &format!("/v1/jobs/{id}/assign"),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    let a = t.post(&format!("/v1/jobs/{id}/fail"), fail).await;
    assert_eq!(a.body["status"], "failed", "budget exhausted");
    let a = t.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (
            a.body["retry_count"].as_u64(),
            a.body["error"]["code"].as_str()
        ),
        (Some(2), Some("OOM"))
    );
}

#[tokio::test]
async fn cancel_rules_and_invalid_transition() {
    let t = test_app();
    let id = t.submit(json!({"type": "upscale"})).await;
    let a = t
        .post(
            &format!("/v1/jobs/{id}/cancel"),
            json!({"reason": "no longer needed"}),
        )
        .await;
    assert_eq!(a.body["status"], "cancelled");
    let a = t.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&a), "INVALID_TRANSITION");
    assert_eq!(a.body["error"]["current_status"], "cancelled");
    let id = t.submit(json!({"type": "upscale"})).await;
    t.post(
        &format!("/v1/jobs/{id}/assign"),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    let a = t
        .call("POST", &format!("/v1/jobs/{id}/cancel"), None, &[])
        .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::CONFLICT, "INVALID_TRANSITION")
    );
    assert_eq!(a.body["error"]["current_status"], "assigned");
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field() {
    let t = test_app();
    let a = t
        .raw(
            Request::post("/v1/jobs")
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::BAD_REQUEST, "MALFORMED_REQUEST")
    );
    let a = t
        .post("/v1/jobs", json!({"type": "upscale", "priority": "high"}))
        .await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("priority"))
    );
    let a = t.post("/v1/jobs", json!({"prompt": "x"})).await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("type"))
    );
    let a = t
        .post("/v1/jobs", json!({"type": "upscale", "priority": 300}))
        .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
    );
    assert_eq!(a.body["error"]["details"][0]["field"], "priority");
    let a = t.post("/v1/jobs", json!({"type": "Not A Type!"})).await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("type"))
    );
    let a = t
        .post("/v1/jobs", json!({"type": "upscale", "surprise": 1}))
        .await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "unknown fields are rejected: {}",
        a.body
    );
    let a = t
        .post(
            &format!("/v1/jobs/{}/progress", uuid::Uuid::now_v7()),
            json!({"progress": 101}),
        )
        .await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("progress"))
    );
    let a = t.get("/v1/jobs/not-a-uuid").await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let a = t.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::NOT_FOUND, "JOB_NOT_FOUND")
    );
    let a = t
        .get(&format!("/v1/workflows/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::NOT_FOUND, "WORKFLOW_NOT_FOUND")
    );
    let a = t
        .post(
            &format!("/v1/jobs/{}/complete", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::NOT_FOUND, "JOB_NOT_FOUND")
    );
    let a = t.get("/v1/jobs/stats?timeframe=fortnight").await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("timeframe"))
    );
    let a = t.get("/v1/jobs?limit=0").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let a = t.get("/v1/events?after=garbage").await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("after"))
    );
    let a = t.get("/v1/jobs/x/y/z").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = t
        .post(
            "/v1/workflows",
            json!({"name": "", "steps": [{"type": "upscale", "depends_on": [0]}]}),
        )
        .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
    );
    let fields: Vec<&str> = a.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"name") && fields.iter().any(|f| f.starts_with("steps[0]")),
        "{fields:?}"
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let t = test_app_with(HttpConfig {
        body_limit: 1024,
        ..HttpConfig::default()
    });
    let big = "x".repeat(4096);
    let a = t
        .post("/v1/jobs", json!({"type": "upscale", "prompt": big}))
        .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
}

#[tokio::test]
async fn idempotency_keys_replay_or_refuse() {
    let t = test_app();
    let key = [("idempotency-key", "k-1")];
    let body = json!({"type": "upscale"});
    let first = t.call("POST", "/v1/jobs", Some(body.clone()), &key).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = t.call("POST", "/v1/jobs", Some(body), &key).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["job_id"], first.body["job_id"]);
    assert_eq!(again.body["position"], first.body["position"]);
    assert_eq!(again.body["replayed"], true);
    let other = t
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"type": "controlnet"})),
            &key,
        )
        .await;
    assert_eq!(
        (other.status, error_code(&other)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    let page = t.get("/v1/jobs").await;
    assert_eq!(
        page.body["items"].as_array().unwrap().len(),
        1,
        "nothing appended twice"
    );
    // A retried command whose first attempt succeeded gets its original answer, not a 409.
    let id = first.body["job_id"].as_str().unwrap();
    let k2 = [("idempotency-key", "assign-1")];
    let assign = json!({"worker_id": "w", "machine_id": "m"});
    let a1 = t
        .call(
            "POST",
            &format!("/v1/jobs/{id}/assign"),
            Some(assign.clone()),
            &k2,
        )
        .await;
    let a2 = t
        .call("POST", &format!("/v1/jobs/{id}/assign"), Some(assign), &k2)
        .await;
    assert_eq!((a1.status, a2.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a2.body["version"], 2);
    assert_eq!(a2.body["replayed"], true);
}

#[tokio::test]
async fn if_match_detects_stale_versions() {
    let t = test_app();
    let id = t.submit(json!({"type": "upscale"})).await;
    let assign = json!({"worker_id": "w", "machine_id": "m"});
    let stale = t
        .call(
            "POST",
            &format!("/v1/jobs/{id}/assign"),
            Some(assign.clone()),
            &[("if-match", "7")],
        )
        .await;
    assert_eq!(
        (stale.status, error_code(&stale)),
        (StatusCode::CONFLICT, "VERSION_CONFLICT")
    );
    assert_eq!(stale.body["error"]["current_version"], 1);
    let ok = t
        .call(
            "POST",
            &format!("/v1/jobs/{id}/assign"),
            Some(assign),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = t
        .call(
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            Some(json!({})),
            &[("if-match", "soon")],
        )
        .await;
    assert_eq!(
        (
            bad.status,
            bad.body["error"]["details"][0]["field"].as_str()
        ),
        (StatusCode::BAD_REQUEST, Some("If-Match"))
    );
}

#[tokio::test]
async fn correlation_ids_are_echoed_and_stored() {
    let t = test_app();
    let a = t
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"type": "upscale"})),
            &[("x-correlation-id", "corr-42")],
        )
        .await;
    assert_eq!(a.headers["x-correlation-id"], "corr-42");
    let id = a.body["job_id"].as_str().unwrap();
    let events = t.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(events.body["events"][0]["correlation_id"], "corr-42");
    assert_eq!(events.body["events"][0]["metadata"]["actor"], "api");
    let page = t.get("/v1/events?correlation_id=corr-42").await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 1);
    let generated = t.get("/health").await;
    assert!(!generated.headers["x-correlation-id"].is_empty());
}

#[tokio::test]
async fn api_keys_guard_v1_but_not_health() {
    let t = test_app_with(HttpConfig {
        api_keys: vec!["s3cret".into()],
        ..HttpConfig::default()
    });
    let a = t.post("/v1/jobs", json!({"type": "upscale"})).await;
    assert_eq!(
        (a.status, error_code(&a)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let a = t
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"type": "upscale"})),
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = t
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"type": "upscale"})),
            &[("authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = t
        .call("GET", "/v1/jobs", None, &[("x-api-key", "s3cret")])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(t.get("/health").await.status, StatusCode::OK);
    assert_eq!(t.get("/openapi.json").await.status, StatusCode::OK);
}

#[tokio::test]
async fn claims_take_priority_then_fifo_and_respect_capabilities() {
    // One partition: strict order. Across partitions claims go round robin (see the
    // claim_order tests in tests/tests/job_queue.rs).
    let t = test_app_on(1, HttpConfig::default());
    let low = t.submit(json!({"type": "upscale", "priority": 10})).await;
    let high_1 = t.submit(json!({"type": "upscale", "priority": 90})).await;
    let high_2 = t.submit(json!({"type": "upscale", "priority": 90})).await;
    let gpu = t
        .submit(
            json!({"type": "render", "priority": 100, "requirements": {"capabilities": ["cuda"]}}),
        )
        .await;
    t.model.catch_up().await.unwrap();
    let claim = |caps: Value| json!({"machine_id": "m1", "capabilities": caps});
    let mut order = Vec::new();
    for _ in 0..3 {
        let a = t
            .post("/v1/workers/w1/claim", claim(json!(["upscale"])))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["job"]["status"], "assigned");
        assert_eq!(a.body["job"]["worker_id"], "w1");
        order.push(a.body["job"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(order, [high_1, high_2, low]);
    let a = t
        .post("/v1/workers/w1/claim", claim(json!(["upscale"])))
        .await;
    assert_eq!(
        a.status,
        StatusCode::NO_CONTENT,
        "the cuda job needs a cuda worker"
    );
    let a = t.post("/v1/workers/w2/claim", claim(json!(["cuda"]))).await;
    assert_eq!(a.body["job"]["id"].as_str(), Some(gpu.as_str()));
}

#[tokio::test]
async fn min_position_waits_for_the_read_model() {
    let t = test_app();
    let a = t.post("/v1/jobs", json!({"type": "upscale"})).await;
    let id = a.body["job_id"].as_str().unwrap().to_owned();
    let position = a.body["position"].as_str().unwrap().to_owned();
    // Nothing has fed the model yet: it misses the job, and a plain lookup answers from
    // the job's stream instead (never a 404 after the create answered)...
    assert_eq!(
        jobsource_app::read::ReadSide::job(&*t.model, id.parse().unwrap())
            .await
            .unwrap(),
        None
    );
    let folded = t.call("GET", &format!("/v1/jobs/{id}"), None, &[]).await;
    assert_eq!(folded.status, StatusCode::OK, "{}", folded.body);
    assert_eq!(folded.body["status"], "pending");
    // ...a read-your-writes read waits until the model passes the position.
    let model = t.model.clone();
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        model.catch_up().await.unwrap();
    });
    let hit = t
        .call(
            "GET",
            &format!("/v1/jobs/{id}?min_position={position}"),
            None,
            &[],
        )
        .await;
    assert_eq!(hit.status, StatusCode::OK);
    let via_header = t
        .call(
            "GET",
            &format!("/v1/jobs/{id}"),
            None,
            &[("x-min-position", &position)],
        )
        .await;
    assert_eq!(via_header.status, StatusCode::OK);
    feeder.await.unwrap();
    let bad = t
        .call(
            "GET",
            &format!("/v1/jobs/{id}?min_position=nope"),
            None,
            &[],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn lists_stats_and_event_pages() {
    let t = test_app();
    for i in 0..5 {
        t.submit(json!({"type": if i % 2 == 0 { "upscale" } else { "controlnet" }}))
            .await;
    }
    let page1 = t.get("/v1/jobs?limit=3").await;
    assert_eq!(page1.body["items"].as_array().unwrap().len(), 3);
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2 = t.get(&format!("/v1/jobs?limit=3&cursor={cursor}")).await;
    assert_eq!(page2.body["items"].as_array().unwrap().len(), 2);
    assert!(page2.body["next_cursor"].is_null());
    let filtered = t.get("/v1/jobs?type=controlnet").await;
    assert_eq!(filtered.body["items"].as_array().unwrap().len(), 2);
    let stats = t.get("/v1/jobs/stats?timeframe=hour").await;
    assert_eq!(stats.body["total"], 5);
    assert_eq!(stats.body["by_type"]["upscale"], 3);
    assert_eq!(stats.body["by_status"]["pending"], 5);
    // The audit log in pages of two, with a cursor.
    let mut seen = 0;
    let mut after = "start".to_owned();
    loop {
        let p = t
            .get(&format!("/v1/events?limit=2&types=job_*&after={after}"))
            .await;
        let n = p.body["events"].as_array().unwrap().len();
        seen += n;
        after = p.body["next_cursor"].as_str().unwrap().to_owned();
        if n == 0 {
            break;
        }
    }
    assert_eq!(seen, 5);
}

#[tokio::test]
async fn openapi_lists_every_route_and_error() {
    let t = test_app();
    let doc = t.get("/openapi.json").await.body;
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/stats",
        "/v1/jobs/{id}/events",
        "/v1/jobs/{id}/assign",
        "/v1/jobs/{id}/progress",
        "/v1/jobs/{id}/complete",
        "/v1/jobs/{id}/fail",
        "/v1/jobs/{id}/cancel",
        "/v1/workers/{worker_id}/claim",
        "/v1/workflows",
        "/v1/workflows/{id}",
        "/v1/workflows/stats",
        "/v1/workflows/{id}/events",
        "/v1/workflows/{id}/cancel",
        "/v1/events",
        "/v1/projections",
        "/v1/projections/{name}/rebuild",
        "/health",
        "/health/ready",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(doc["paths"]["/v1/jobs"]["post"]["responses"]["422"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // Generated clients name methods by operation id: every one must be unique.
    let mut ids = std::collections::HashSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op.get("operationId").and_then(|i| i.as_str()) {
                assert!(
                    ids.insert(id.to_owned()),
                    "operation id {id} repeated ({method} {path})"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_job_type_catalog_restricts_types_and_fills_requirements() {
    let catalog =
        jobsource_app::catalog::Catalog::parse(include_str!("../../../job-types.example.toml"))
            .expect("example catalog parses");
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
    let service = Arc::new(Service::new(store.clone(), Some(Arc::new(catalog))));
    let model = MemoryReadModel::new(store);
    let t = TestApp {
        router: app(AppState::new(service, model.clone(), HttpConfig::default())),
        model,
    };
    let a = t.post("/v1/jobs", json!({"type": "render"})).await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("type"))
    );
    let a = t.post("/v1/jobs", json!({"type": "text-to-image"})).await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("prompt"))
    );
    let id = t
        .submit(json!({"type": "text-to-image", "prompt": "a cat"}))
        .await;
    let job = t.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job.body["requirements"]["gpu_memory"], 8.0);
    let a = t
        .post(
            "/v1/workflows",
            json!({"name": "w", "steps": [{"type": "upscale"}, {"type": "nope"}]}),
        )
        .await;
    assert_eq!(
        (a.status, a.body["error"]["details"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("steps[1].type"))
    );
}

//! `/api` handler tests through `tower::ServiceExt::oneshot` on the embedded stack (the
//! in-memory store, the in-memory read model following it, and an orchestrator that the
//! tests step by hand so they can order it against the handlers).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use jobsource_domain::job::{AssignJob, JobCommand};
use jobsource_domain::workflow::WorkflowCommand;
use jobsource_domain::{job_stream, workflow_stream};
use jobsource_eventstore::{EventStore, MemoryStore, StoreConfig};
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;
use uuid::Uuid;

use crate::{app, AppState, HttpConfig};
use jobsource_app::orchestrator::{MemoryOrchestratorState, Orchestrator};
use jobsource_app::read::memory::MemoryReadModel;
use jobsource_app::service::{CommandContext, Service};

struct Harness {
    router: Router,
    state: AppState,
    service: Arc<Service>,
    orchestrator: Orchestrator,
    _stop: watch::Sender<bool>,
}

fn harness_with(config: HttpConfig) -> Harness {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig {
        partitions: 4,
        ..StoreConfig::default()
    }));
    let service = Arc::new(Service::new(store.clone(), None));
    let model = MemoryReadModel::new(store);
    let (stop, rx) = watch::channel(false);
    tokio::spawn(model.clone().run(rx));
    let state = AppState::new(service.clone(), model, config);
    Harness {
        router: app(state.clone()),
        state,
        orchestrator: Orchestrator::new(
            service.clone(),
            Arc::new(MemoryOrchestratorState::default()),
        ),
        service,
        _stop: stop,
    }
}

fn harness() -> Harness {
    harness_with(HttpConfig::default())
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Harness {
    async fn raw(&self, method: &str, uri: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "non-JSON body ({status}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer { status, body }
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.raw("POST", uri, &body.to_string(), &[]).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.raw("GET", uri, "", &[]).await
    }

    async fn submit(&self, body: Value) -> String {
        let a = self.post("/api/jobs/submit", body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["job_id"].as_str().unwrap().to_owned()
    }

    async fn assign(&self, job: &str) {
        let cmd = JobCommand::Assign(AssignJob {
            lease_expires_at: None,
            worker_id: "w1".into(),
            machine_id: "m1".into(),
        });
        self.service
            .job(job.parse().unwrap(), cmd, &CommandContext::new())
            .await
            .unwrap();
    }

    async fn event_types(&self, stream: &str) -> Vec<String> {
        self.service
            .history(stream)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.envelope.event_type)
            .collect()
    }
}

/// Asserts `body` is the seed's error with `code`.
fn seed_error(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["success"], false, "{}", a.body);
    assert_eq!(a.body["error"]["code"], code, "{}", a.body);
    assert!(a.body["error"]["message"].is_string(), "{}", a.body);
}

/// Accepts the JSON types a field may have.
type Check = fn(&Value) -> bool;

/// Asserts `object` has exactly `keys`, each of a JSON type its check accepts.
fn has_keys(object: &Value, keys: &[(&str, Check)]) {
    let map = object.as_object().unwrap_or_else(|| panic!("{object}"));
    let mut expected: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    let mut actual: Vec<&str> = map.keys().map(String::as_str).collect();
    expected.sort_unstable();
    actual.sort_unstable();
    assert_eq!(actual, expected, "{object}");
    for (k, ok) in keys {
        assert!(ok(&map[*k]), "{k} has the wrong type in {object}");
    }
}

fn string(v: &Value) -> bool {
    v.is_string()
}
fn string_or_null(v: &Value) -> bool {
    v.is_string() || v.is_null()
}
fn number(v: &Value) -> bool {
    v.is_number()
}
fn any(_: &Value) -> bool {
    true
}

#[tokio::test]
async fn submit_status_and_cancel_answer_the_seed_shapes() {
    let h = harness();
    let a = h
        .post(
            "/api/jobs/submit",
            json!({"type": "text-to-image", "prompt": "a cat", "priority": 75,
                   "parameters": {"width": 512}, "webhook_url": "https://example.com/hook"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    has_keys(
        &a.body,
        &[
            ("success", Value::is_boolean),
            ("job_id", string),
            ("status", string),
        ],
    );
    assert_eq!(
        (&a.body["success"], &a.body["status"]),
        (&json!(true), &json!("submitted"))
    );
    let id = a.body["job_id"].as_str().unwrap().to_owned();

    // Readable at once, every field present (null while unset).
    let s = h.get(&format!("/api/jobs/{id}/status")).await;
    assert_eq!(s.status, StatusCode::OK);
    has_keys(
        &s.body,
        &[("success", Value::is_boolean), ("job", Value::is_object)],
    );
    let job = &s.body["job"];
    has_keys(
        job,
        &[
            ("id", string),
            ("type", string),
            ("status", string),
            ("progress", number),
            ("created_at", string),
            ("started_at", Value::is_null),
            ("completed_at", Value::is_null),
            ("result", Value::is_null),
            ("error", Value::is_null),
            ("worker_id", Value::is_null),
            ("machine_id", Value::is_null),
            ("workflow_id", Value::is_null),
        ],
    );
    assert_eq!(
        (&job["id"], &job["type"], &job["status"], &job["progress"]),
        (
            &json!(id),
            &json!("text-to-image"),
            &json!("pending"),
            &json!(0)
        )
    );

    // A dependent job starts waiting.
    let a = h
        .post(
            "/api/jobs/submit",
            json!({"type": "upscale", "depends_on": [id]}),
        )
        .await;
    assert_eq!(a.body["status"], "waiting", "{}", a.body);

    let c = h
        .post(&format!("/api/jobs/{id}/cancel"), json!({"reason": "no"}))
        .await;
    assert_eq!(
        (c.status, c.body),
        (
            StatusCode::OK,
            json!({"success": true, "message": "Job cancelled successfully"})
        )
    );
    let s = h.get(&format!("/api/jobs/{id}/status")).await;
    assert_eq!(s.body["job"]["status"], "cancelled");
    assert!(s.body["job"]["completed_at"].is_string());
    // Cancelling again, or a job that started, is a 200 refusal; an empty body is `{}`.
    let again = h
        .raw("POST", &format!("/api/jobs/{id}/cancel"), "", &[])
        .await;
    assert_eq!(
        (again.status, again.body),
        (
            StatusCode::OK,
            json!({"success": false, "message": "Cannot cancel job in status: cancelled"})
        )
    );
    let started = h.submit(json!({"type": "upscale"})).await;
    h.assign(&started).await;
    let refused = h
        .post(&format!("/api/jobs/{started}/cancel"), json!({}))
        .await;
    assert_eq!(
        refused.body["message"],
        "Cannot cancel job in status: assigned"
    );

    // Unknown ids: 404 in the seed's shape (cancel also carries the seed's message).
    for path in [
        "/api/jobs/nonexistent-job/status".to_owned(),
        format!("/api/jobs/{}/status", Uuid::now_v7()),
    ] {
        let n = h.get(&path).await;
        seed_error(&n, StatusCode::NOT_FOUND, "JOB_NOT_FOUND");
        assert!(n.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Job with ID "));
    }
    let n = h
        .post(&format!("/api/jobs/{}/cancel", Uuid::now_v7()), json!({}))
        .await;
    seed_error(&n, StatusCode::NOT_FOUND, "JOB_NOT_FOUND");
    assert_eq!(n.body["message"], "Job not found");
}

#[tokio::test]
async fn bad_input_answers_the_seed_errors_never_plain_text() {
    let h = harness_with(HttpConfig {
        body_limit: 2048,
        ..HttpConfig::default()
    });
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        // Malformed JSON and wrong types carry the route's code.
        (
            "/api/jobs/submit",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "JOB_SUBMISSION_FAILED",
        ),
        (
            "/api/jobs/submit",
            json!({"type": "upscale", "priority": "high"}).to_string(),
            StatusCode::BAD_REQUEST,
            "JOB_SUBMISSION_FAILED",
        ),
        (
            "/api/jobs/submit",
            json!({"type": "upscale", "priority": -1}).to_string(),
            StatusCode::BAD_REQUEST,
            "JOB_SUBMISSION_FAILED",
        ),
        // Domain validation: 400 here (422 on /v1).
        (
            "/api/jobs/submit",
            json!({"type": "upscale", "priority": 101}).to_string(),
            StatusCode::BAD_REQUEST,
            "JOB_SUBMISSION_FAILED",
        ),
        (
            "/api/jobs/submit",
            String::new(),
            StatusCode::BAD_REQUEST,
            "JOB_SUBMISSION_FAILED",
        ),
        (
            "/api/workflows",
            "[1,2".into(),
            StatusCode::BAD_REQUEST,
            "WORKFLOW_CREATION_FAILED",
        ),
        (
            "/api/workflows",
            json!({"name": "", "steps": []}).to_string(),
            StatusCode::BAD_REQUEST,
            "WORKFLOW_CREATION_FAILED",
        ),
        (
            "/api/workflows",
            json!({"name": "w", "steps": [{"type": "a"}, {"type": "b", "depends_on": [1]}]})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "WORKFLOW_CREATION_FAILED",
        ),
        (
            "/api/workflows",
            json!({"name": "w", "steps": [{"type": "a", "depends_on": [-1]}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "WORKFLOW_CREATION_FAILED",
        ),
        (
            "/api/jobs/submit",
            json!({"type": "upscale", "prompt": "x".repeat(4096)}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (path, body, status, code) in cases {
        let a = h.raw("POST", path, &body, &[]).await;
        seed_error(&a, status, code);
        if status == StatusCode::BAD_REQUEST {
            let message = a.body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("validation failed"),
                "{path} {body}: {message}"
            );
        }
    }
    let a = h
        .post("/api/jobs/submit", json!({"prompt": "no type"}))
        .await;
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Job validation failed: type"),
        "{}",
        a.body
    );

    let id = h.submit(json!({"type": "upscale"})).await;
    let a = h
        .raw("POST", &format!("/api/jobs/{id}/cancel"), "{", &[])
        .await;
    seed_error(&a, StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    let a = h
        .post(&format!("/api/jobs/{id}/cancel"), json!({"reason": 5}))
        .await;
    seed_error(&a, StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");

    // Unknown routes and methods: the seed's catch-all.
    let a = h.get("/api/nope").await;
    seed_error(&a, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        a.body["error"]["message"],
        "Endpoint GET /api/nope not found"
    );
    let a = h.get("/api/jobs/submit").await;
    seed_error(&a, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        a.body["error"]["message"],
        "Endpoint GET /api/jobs/submit not found"
    );
    // /v1 keeps its own shape.
    let a = h.get("/v1/nope").await;
    assert!(a.body.get("success").is_none(), "{}", a.body);
}

#[tokio::test]
async fn stats_count_the_queue_structures_and_check_the_timeframe() {
    let h = harness();
    let mut ids = Vec::new();
    for t in ["text-to-image", "upscale", "text-to-image", "upscale"] {
        ids.push(h.submit(json!({"type": t, "prompt": "p"})).await);
    }
    h.assign(&ids[0]).await;
    let a = h
        .post(
            &format!("/api/internal/jobs/{}/complete", ids[0]),
            json!({"result": {}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    h.assign(&ids[1]).await;
    h.post(&format!("/api/jobs/{}/cancel", ids[2]), json!({}))
        .await;
    // A waiting job is in no queue structure, as in the seed.
    h.submit(json!({"type": "upscale", "depends_on": [ids[3]]}))
        .await;

    for query in ["", "?timeframe=", "?timeframe=day"] {
        let s = h.get(&format!("/api/jobs/stats{query}")).await;
        assert_eq!(s.status, StatusCode::OK, "{}", s.body);
        has_keys(
            &s.body,
            &[
                ("success", Value::is_boolean),
                ("stats", Value::is_object),
                ("timeframe", string),
            ],
        );
        assert_eq!(s.body["timeframe"], "day");
        let stats = &s.body["stats"];
        has_keys(
            stats,
            &[
                ("total", number),
                ("pending", number),
                ("running", number),
                ("completed", number),
                ("failed", number),
                ("by_type", Value::is_object),
            ],
        );
        assert_eq!(
            [
                &stats["total"],
                &stats["pending"],
                &stats["running"],
                &stats["completed"],
                &stats["failed"]
            ],
            [&json!(3), &json!(1), &json!(1), &json!(1), &json!(0)],
            "{stats}"
        );
        assert_eq!(
            stats["by_type"],
            json!({"text-to-image": 2, "upscale": 3}),
            "{stats}"
        );
    }
    let s = h.get("/api/jobs/stats?timeframe=week").await;
    assert_eq!(s.body["timeframe"], "week");
    for path in [
        "/api/jobs/stats?timeframe=year",
        "/api/workflows/stats?timeframe=month",
    ] {
        let bad = h.get(path).await;
        assert_eq!(
            (bad.status, bad.body),
            (
                StatusCode::BAD_REQUEST,
                json!({"success": false, "error": {"code": "INVALID_TIMEFRAME",
                    "message": "Timeframe must be hour, day, or week"}})
            )
        );
    }
}

#[tokio::test]
async fn workflow_status_and_cancel_count_what_this_call_cancelled() {
    let h = harness();
    let w = h
        .post(
            "/api/workflows",
            json!({"name": "three", "description": "d", "steps": [
                {"type": "text-to-image", "prompt": "a"},
                {"type": "upscale", "depends_on": [0]},
                {"type": "upscale", "parameters": {"scale": 2}}
            ]}),
        )
        .await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    has_keys(
        &w.body,
        &[
            ("success", Value::is_boolean),
            ("workflow_id", string),
            ("job_ids", Value::is_array),
        ],
    );
    let wf = w.body["workflow_id"].as_str().unwrap().to_owned();
    let jobs: Vec<String> = serde_json::from_value(w.body["job_ids"].clone()).unwrap();
    assert_eq!(jobs.len(), 3);

    let s = h.get(&format!("/api/workflows/{wf}/status")).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    has_keys(
        &s.body,
        &[
            ("success", Value::is_boolean),
            ("workflow", Value::is_object),
            ("steps", Value::is_array),
        ],
    );
    has_keys(
        &s.body["workflow"],
        &[
            ("id", string),
            ("name", string),
            ("description", string_or_null),
            ("status", string),
            ("total_steps", number),
            ("completed_steps", number),
            ("progress_percentage", number),
            ("created_at", string),
            ("completed_at", Value::is_null),
        ],
    );
    let steps = s.body["steps"].as_array().unwrap();
    let statuses: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "waiting", "pending"]);
    for (i, step) in steps.iter().enumerate() {
        has_keys(
            step,
            &[
                ("step_index", number),
                ("job_id", string),
                ("status", string),
                ("progress", number),
                ("result", any),
                ("error", any),
                ("started_at", string_or_null),
                ("completed_at", string_or_null),
            ],
        );
        assert_eq!(
            (step["step_index"].as_u64(), step["job_id"].as_str()),
            (Some(i as u64), Some(jobs[i].as_str()))
        );
    }

    // Step 2 started: it is left to finish, so 2 of 3 are cancelled here.
    h.assign(&jobs[2]).await;
    let c = h
        .post(
            &format!("/api/workflows/{wf}/cancel"),
            json!({"reason": "stop"}),
        )
        .await;
    assert_eq!(
        (c.status, c.body),
        (
            StatusCode::OK,
            json!({"success": true, "message": "Workflow cancelled (2/3 jobs cancelled)"})
        )
    );
    // Readable at once.
    let s = h.get(&format!("/api/workflows/{wf}/status")).await;
    assert_eq!(s.body["workflow"]["status"], "cancelled");
    assert!(s.body["workflow"]["completed_at"].is_string());
    let statuses: Vec<&str> = s.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["cancelled", "cancelled", "assigned"]);

    // The orchestrator's cascade for the same event then changes nothing, and does not
    // stall on a key it finds used with another request.
    h.orchestrator.catch_up().await.unwrap();
    for (p, _, _, error) in h.orchestrator.status().await {
        assert_eq!(error, None, "orchestrator partition {p}");
    }
    for job in &jobs[..2] {
        let types = h.event_types(&job_stream(job.parse().unwrap())).await;
        assert_eq!(
            types.iter().filter(|t| *t == "job_cancelled").count(),
            1,
            "{types:?}"
        );
    }

    let again = h
        .post(&format!("/api/workflows/{wf}/cancel"), json!({}))
        .await;
    assert_eq!(
        (again.status, again.body),
        (
            StatusCode::OK,
            json!({"success": false, "message": "Cannot cancel workflow in status: cancelled"})
        )
    );
    let n = h
        .post(
            &format!("/api/workflows/{}/cancel", Uuid::now_v7()),
            json!({}),
        )
        .await;
    seed_error(&n, StatusCode::NOT_FOUND, "WORKFLOW_NOT_FOUND");
    assert_eq!(n.body["message"], "Workflow not found");
    let n = h.get("/api/workflows/nonexistent-workflow/status").await;
    seed_error(&n, StatusCode::NOT_FOUND, "WORKFLOW_NOT_FOUND");

    // Phase 2's route creates the same way.
    let w = h
        .post(
            "/api/workflows/create",
            json!({"name": "p2", "steps": [{"type": "upscale"}]}),
        )
        .await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    assert_eq!(w.body["job_ids"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn the_cascade_uses_the_orchestrators_keys() {
    // The orchestrator cancels first; this surface's cascade for the same event then
    // replays the orchestrator's results instead of being refused, so it counts them.
    // (Were the keys to drift apart, the count here would be 0.)
    let h = harness();
    let w = h
        .post(
            "/api/workflows",
            json!({"name": "w", "steps": [{"type": "a"}, {"type": "b", "depends_on": [0]}]}),
        )
        .await;
    let wf: Uuid = w.body["workflow_id"].as_str().unwrap().parse().unwrap();
    let jobs: Vec<Uuid> = serde_json::from_value(w.body["job_ids"].clone()).unwrap();
    let ctx = CommandContext::new();
    let outcome = h
        .service
        .workflow(wf, WorkflowCommand::Cancel { reason: None }, &ctx)
        .await
        .unwrap();
    h.orchestrator.catch_up().await.unwrap();
    for job in &jobs {
        let types = h.event_types(&job_stream(*job)).await;
        assert_eq!(types.last().map(String::as_str), Some("job_cancelled"));
    }
    let (cancelled, _) =
        super::workflows::cancel_step_jobs(&h.state, &ctx, outcome.event_ids[0], &jobs).await;
    assert_eq!(cancelled, 2);
    for job in &jobs {
        let types = h.event_types(&job_stream(*job)).await;
        assert_eq!(types.len(), 2, "{types:?}");
    }
    assert_eq!(
        h.event_types(&workflow_stream(wf)).await,
        ["workflow_created", "workflow_cancelled"]
    );
}

#[tokio::test]
async fn workers_report_through_the_internal_routes() {
    let h = harness();
    let id = h.submit(json!({"type": "upscale"})).await;
    // Not assigned yet: the domain refuses, 409 as on /v1.
    let a = h
        .post(
            &format!("/api/internal/jobs/{id}/progress"),
            json!({"progress": 10}),
        )
        .await;
    seed_error(&a, StatusCode::CONFLICT, "INVALID_TRANSITION");
    h.assign(&id).await;
    let a = h
        .post(
            &format!("/api/internal/jobs/{id}/progress"),
            json!({"progress": 40.4, "stage": "upscaling", "message": "m",
                   "worker_id": "w1", "machine_id": "m1"}),
        )
        .await;
    assert_eq!(
        (a.status, a.body),
        (StatusCode::OK, json!({"success": true}))
    );
    let s = h.get(&format!("/api/jobs/{id}/status")).await;
    let job = &s.body["job"];
    assert_eq!(
        (
            &job["status"],
            &job["progress"],
            &job["worker_id"],
            &job["machine_id"]
        ),
        (&json!("running"), &json!(40), &json!("w1"), &json!("m1"))
    );
    assert!(job["started_at"].is_string());
    for body in [
        json!({}),
        json!({"progress": 150}),
        json!({"progress": 20}),
        json!({"progress": "x"}),
    ] {
        let a = h
            .post(&format!("/api/internal/jobs/{id}/progress"), body.clone())
            .await;
        seed_error(&a, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
    let a = h
        .post(
            &format!("/api/internal/jobs/{id}/complete"),
            json!({"result": {"url": "x"}, "duration": 1200}),
        )
        .await;
    assert_eq!(
        (a.status, a.body),
        (StatusCode::OK, json!({"success": true}))
    );
    let job = h.get(&format!("/api/jobs/{id}/status")).await.body["job"].clone();
    assert_eq!(
        (&job["status"], &job["result"]),
        (&json!("completed"), &json!({"url": "x"}))
    );
    assert!(job["completed_at"].is_string());
    let a = h
        .post(
            &format!("/api/internal/jobs/{id}/complete"),
            json!({"result": {}}),
        )
        .await;
    seed_error(&a, StatusCode::CONFLICT, "INVALID_TRANSITION");
    for path in ["progress", "complete"] {
        let a = h
            .post(
                &format!("/api/internal/jobs/{}/{path}", Uuid::now_v7()),
                json!({"progress": 1}),
            )
            .await;
        seed_error(&a, StatusCode::NOT_FOUND, "JOB_NOT_FOUND");
    }
}

#[tokio::test]
async fn api_keys_guard_the_seed_routes_in_their_shape() {
    let h = harness_with(HttpConfig {
        api_keys: vec!["k1".into()],
        ..HttpConfig::default()
    });
    let body = json!({"type": "upscale"}).to_string();
    for headers in [vec![], vec![("x-api-key", "wrong")]] {
        let a = h.raw("POST", "/api/jobs/submit", &body, &headers).await;
        seed_error(&a, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    for header in [("x-api-key", "k1"), ("authorization", "Bearer k1")] {
        let a = h.raw("POST", "/api/jobs/submit", &body, &[header]).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    // Unknown routes under /api are behind the key too.
    let a = h.get("/api/nope").await;
    seed_error(&a, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn openapi_covers_the_seed_routes_with_unique_operation_ids() {
    let h = harness();
    let doc = h.get("/openapi.json").await.body;
    for (path, method) in [
        ("/api/jobs/submit", "post"),
        ("/api/jobs/{id}/status", "get"),
        ("/api/jobs/{id}/cancel", "post"),
        ("/api/jobs/stats", "get"),
        ("/api/workflows", "post"),
        ("/api/workflows/create", "post"),
        ("/api/workflows/{id}/status", "get"),
        ("/api/workflows/{id}/cancel", "post"),
        ("/api/workflows/stats", "get"),
        ("/api/internal/jobs/{id}/progress", "post"),
        ("/api/internal/jobs/{id}/complete", "post"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"]["200"]["content"]["application/json"]["schema"].is_object(),
            "{method} {path}: no 200 schema"
        );
    }
    // Each seed operation has an id no other operation shares.
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let seed_ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with("/api/"))
        .flat_map(|(_, item)| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    assert_eq!(seed_ids.len(), 11);
    for id in seed_ids {
        assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "{id}");
    }
    for schema in ["SeedJob", "SeedErrorBody", "SeedWorkflowStatusResponse"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

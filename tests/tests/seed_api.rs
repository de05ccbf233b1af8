//! The seed-compatible `/api` surface on a live server (real Redis and PostgreSQL, the
//! projections and the orchestrator running): a port of the seed's service integration
//! tests (Phase 3 guide, section 17.1: job lifecycle, cancel, stats, workflow lifecycle
//! and cancel, job completion moving a workflow on, validation and not-found errors,
//! health), plus every route's response shape, the seed's error shapes and `x-api-key`.
//!
//! The seed's tests ran with the API key `test_api_key` and the seed's four job types;
//! so do these (`job-types.example.toml`).

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use jobsource_http::HttpConfig;
use jobsource_tests::app::spawn_app_config;
use jobsource_tests::{redis_connection, redis_url, Answer, TestApp};
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "test_api_key";

fn catalog() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../job-types.example.toml")
}

/// A server with the seed's API key and job types. `bare` uses the seed's bare Redis keys
/// (`JOBSOURCE_READ_PREFIX` empty); only one test does, since those keys are shared.
async fn seed_app(test: &str, bare: bool) -> TestApp {
    spawn_app_config(test, |c| {
        c.http = HttpConfig {
            api_keys: vec![KEY.into()],
            ..HttpConfig::default()
        };
        c.job_types_file = Some(catalog());
        if bare {
            c.read_prefix = Some(String::new());
        }
    })
    .await
}

/// A request with the seed's `x-api-key`.
async fn api(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> Answer {
    app.call(method, path, body.as_ref(), &[("x-api-key", KEY)])
        .await
}

/// Polls an `/api` GET until `done` holds (for the asynchronous parts: the orchestrator,
/// the PostgreSQL list model); panics after 10 s.
async fn api_eventually(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = api(app, "GET", path, None).await;
        if a.status == StatusCode::OK && done(&a.body) {
            return a.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never got there; last: {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// JSON types of a response's fields.
#[derive(Clone, Copy)]
enum T {
    Bool,
    Str,
    Num,
    Obj,
    Arr,
    StrOrNull,
    Any,
}

/// Asserts `v` is an object with exactly these keys, of these types.
fn shape(v: &Value, fields: &[(&str, T)]) {
    let map = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut want: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    let mut got: Vec<&str> = map.keys().map(String::as_str).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "keys of {v}");
    for (k, t) in fields {
        let f = &map[*k];
        let ok = match t {
            T::Bool => f.is_boolean(),
            T::Str => f.is_string(),
            T::Num => f.is_number(),
            T::Obj => f.is_object(),
            T::Arr => f.is_array(),
            T::StrOrNull => f.is_string() || f.is_null(),
            T::Any => true,
        };
        assert!(ok, "{k} has the wrong type in {v}");
    }
}

/// Asserts the seed's error body with `code`.
fn seed_error(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["success"], false, "{}", a.body);
    assert_eq!(a.body["error"]["code"], code, "{}", a.body);
    assert!(a.body["error"]["message"].is_string(), "{}", a.body);
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|j| j.as_str().unwrap().to_owned())
        .collect()
}

const JOB: &[(&str, T)] = &[
    ("id", T::Str),
    ("type", T::Str),
    ("status", T::Str),
    ("progress", T::Num),
    ("created_at", T::Str),
    ("started_at", T::StrOrNull),
    ("completed_at", T::StrOrNull),
    ("result", T::Any),
    ("error", T::Any),
    ("worker_id", T::StrOrNull),
    ("machine_id", T::StrOrNull),
    ("workflow_id", T::StrOrNull),
];

const WORKFLOW: &[(&str, T)] = &[
    ("id", T::Str),
    ("name", T::Str),
    ("description", T::StrOrNull),
    ("status", T::Str),
    ("total_steps", T::Num),
    ("completed_steps", T::Num),
    ("progress_percentage", T::Num),
    ("created_at", T::Str),
    ("completed_at", T::StrOrNull),
];

const STEP: &[(&str, T)] = &[
    ("step_index", T::Num),
    ("job_id", T::Str),
    ("status", T::Str),
    ("progress", T::Num),
    ("result", T::Any),
    ("error", T::Any),
    ("started_at", T::StrOrNull),
    ("completed_at", T::StrOrNull),
];

/// Seed: "should handle complete job lifecycle through API", "should cancel jobs through
/// API" and "should handle complete workflow lifecycle through API", with its checks of
/// the Redis keys (`job:<id>`, `jobs:pending` with the priority as score, `workflow:<id>`,
/// `job:<id>:depends_on`) on the seed's bare key names.
#[tokio::test]
async fn job_and_workflow_lifecycle_on_the_seed_keys() {
    let mut conn = redis_connection(&redis_url()).await.unwrap();
    // A checkpoint left by an aborted run would belong to another store.
    let bookkeeping = ["projection:redis:checkpoint", "projection:redis:state"];
    let _: () = conn.del(&bookkeeping).await.unwrap();
    let app = seed_app("seed_lifecycle", true).await;

    // 1. Submit.
    let a = api(
        &app,
        "POST",
        "/api/jobs/submit",
        Some(json!({
            "type": "text-to-image", "prompt": "Integration test image",
            "parameters": {"width": 512, "height": 512}, "priority": 75,
            "webhook_url": "https://example.com/webhook"
        })),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    shape(
        &a.body,
        &[("success", T::Bool), ("job_id", T::Str), ("status", T::Str)],
    );
    assert_eq!(
        (&a.body["success"], &a.body["status"]),
        (&json!(true), &json!("submitted"))
    );
    let job_id = a.str("job_id");

    // 2. Status: readable as soon as the command answered.
    let s = api(&app, "GET", &format!("/api/jobs/{job_id}/status"), None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    shape(&s.body, &[("success", T::Bool), ("job", T::Obj)]);
    shape(&s.body["job"], JOB);
    let job = &s.body["job"];
    assert_eq!(
        (&job["id"], &job["type"], &job["status"], &job["progress"]),
        (
            &json!(job_id),
            &json!("text-to-image"),
            &json!("pending"),
            &json!(0)
        )
    );
    for unset in ["started_at", "completed_at", "result", "error", "worker_id"] {
        assert!(job[unset].is_null(), "{unset} in {job}");
    }

    // 3-4. The seed's keys, as services reading Redis directly expect them.
    let hash: HashMap<String, String> = conn.hgetall(format!("job:{job_id}")).await.unwrap();
    assert_eq!(
        (hash["type"].as_str(), hash["status"].as_str()),
        ("text-to-image", "pending")
    );
    assert!(!hash["correlation_id"].is_empty(), "{hash:?}");
    let pending: Vec<(String, f64)> = conn.zrange_withscores("jobs:pending", 0, -1).await.unwrap();
    assert!(pending.contains(&(job_id.clone(), 75.0)), "{pending:?}");

    // Cancel, then the job reads cancelled and leaves the pending zset.
    let c = api(
        &app,
        "POST",
        &format!("/api/jobs/{job_id}/cancel"),
        Some(json!({"reason": "Integration test cancellation"})),
    )
    .await;
    assert_eq!(
        (c.status, c.body),
        (
            StatusCode::OK,
            json!({"success": true, "message": "Job cancelled successfully"})
        )
    );
    let s = api(&app, "GET", &format!("/api/jobs/{job_id}/status"), None).await;
    assert_eq!(s.body["job"]["status"], "cancelled");
    assert!(s.body["job"]["completed_at"].is_string());
    let score: Option<f64> = conn.zscore("jobs:pending", &job_id).await.unwrap();
    assert_eq!(score, None);
    let again = api(
        &app,
        "POST",
        &format!("/api/jobs/{job_id}/cancel"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (again.status, again.body),
        (
            StatusCode::OK,
            json!({"success": false, "message": "Cannot cancel job in status: cancelled"})
        )
    );

    // Workflow lifecycle.
    let w = api(&app, "POST", "/api/workflows", Some(json!({
        "name": "Integration Test Workflow", "description": "Multi-step workflow for testing",
        "steps": [
            {"type": "text-to-image", "prompt": "Base image", "parameters": {"width": 512, "height": 512}},
            {"type": "upscale", "parameters": {"scale_factor": 2}, "depends_on": [0]}
        ],
        "webhook_url": "https://example.com/workflow-webhook"
    }))).await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    shape(
        &w.body,
        &[
            ("success", T::Bool),
            ("workflow_id", T::Str),
            ("job_ids", T::Arr),
        ],
    );
    let wf = w.str("workflow_id");
    let jobs = ids(&w.body["job_ids"]);
    assert_eq!(jobs.len(), 2);
    let s = api(&app, "GET", &format!("/api/workflows/{wf}/status"), None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    shape(
        &s.body,
        &[
            ("success", T::Bool),
            ("workflow", T::Obj),
            ("steps", T::Arr),
        ],
    );
    shape(&s.body["workflow"], WORKFLOW);
    let workflow = &s.body["workflow"];
    assert_eq!(
        (
            &workflow["id"],
            &workflow["name"],
            &workflow["description"],
            &workflow["status"]
        ),
        (
            &json!(wf),
            &json!("Integration Test Workflow"),
            &json!("Multi-step workflow for testing"),
            &json!("pending")
        )
    );
    assert_eq!(
        (
            &workflow["total_steps"],
            &workflow["completed_steps"],
            workflow["progress_percentage"].as_f64()
        ),
        (&json!(2), &json!(0), Some(0.0))
    );
    let steps = s.body["steps"].as_array().unwrap();
    for (i, (step, status)) in steps.iter().zip(["pending", "waiting"]).enumerate() {
        shape(step, STEP);
        assert_eq!(
            (&step["step_index"], &step["job_id"], &step["status"]),
            (&json!(i), &json!(jobs[i]), &json!(status))
        );
    }
    let whash: HashMap<String, String> = conn.hgetall(format!("workflow:{wf}")).await.unwrap();
    assert_eq!(
        (whash["name"].as_str(), whash["total_steps"].as_str()),
        ("Integration Test Workflow", "2")
    );
    assert!(!whash["correlation_id"].is_empty(), "{whash:?}");
    let deps: Vec<String> = conn
        .smembers(format!("job:{}:depends_on", jobs[1]))
        .await
        .unwrap();
    assert_eq!(deps, [jobs[0].clone()]);

    // Stop the server first (no projector writes after the cleanup), then remove the
    // shared bare keys this test wrote.
    app.stop().await;
    let mut keys: Vec<String> = bookkeeping.iter().map(|k| (*k).to_owned()).collect();
    keys.extend([
        format!("job:{job_id}"),
        format!("job:{job_id}:depends_on"),
        format!("job:{job_id}:dependents"),
        format!("workflow:{wf}"),
        format!("workflow:{wf}:jobs"),
    ]);
    for j in &jobs {
        keys.extend([
            format!("job:{j}"),
            format!("job:{j}:depends_on"),
            format!("job:{j}:dependents"),
        ]);
    }
    let _: () = conn.del(&keys).await.unwrap();
    let mut members = jobs.clone();
    members.push(job_id);
    let _: () = conn.zrem("jobs:pending", &members).await.unwrap();
    for set in ["jobs:assigned", "jobs:completed", "jobs:failed"] {
        let _: () = conn.srem(set, &members).await.unwrap();
    }
}

/// Seed: "should get job statistics through API" (three jobs, all pending), then the
/// other buckets as a worker moves jobs on, and the timeframe rules.
#[tokio::test]
async fn job_statistics_count_the_redis_queue_structures() {
    let app = seed_app("seed_job_stats", false).await;
    let mut jobs = Vec::new();
    for t in ["text-to-image", "upscale", "text-to-image"] {
        let a = api(
            &app,
            "POST",
            "/api/jobs/submit",
            Some(json!({"type": t, "prompt": format!("{t} job")})),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        jobs.push(a.str("job_id"));
    }
    let s = api(&app, "GET", "/api/jobs/stats?timeframe=day", None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    shape(
        &s.body,
        &[
            ("success", T::Bool),
            ("stats", T::Obj),
            ("timeframe", T::Str),
        ],
    );
    shape(
        &s.body["stats"],
        &[
            ("total", T::Num),
            ("pending", T::Num),
            ("running", T::Num),
            ("completed", T::Num),
            ("failed", T::Num),
            ("by_type", T::Obj),
        ],
    );
    let counts = |v: &Value| {
        let s = &v["stats"];
        [
            &s["total"],
            &s["pending"],
            &s["running"],
            &s["completed"],
            &s["failed"],
        ]
        .map(|n| n.as_u64().unwrap())
    };
    assert_eq!(counts(&s.body), [3, 3, 0, 0, 0]);
    assert_eq!(s.body["timeframe"], "day");
    // by_type comes from the PostgreSQL list model, milliseconds behind.
    api_eventually(&app, "/api/jobs/stats?timeframe=hour", |b| {
        b["stats"]["by_type"] == json!({"text-to-image": 2, "upscale": 1})
    })
    .await;

    // A worker takes the upscale job and finishes it; another is taken and left running.
    let claim = |caps: Vec<&'static str>| {
        let app = &app;
        async move {
            let c = api(
                app,
                "POST",
                "/v1/workers/w1/claim",
                // The catalog gives the seed's types GPU memory needs: a big-GPU worker.
                Some(json!({"machine_id": "m1", "capabilities": caps, "gpu_memory": 80})),
            )
            .await;
            assert_eq!(c.status, StatusCode::OK, "{}", c.body);
            c.body["job"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no job in {}", c.body))
                .to_owned()
        }
    };
    let upscale = claim(vec!["upscale"]).await;
    assert_eq!(upscale, jobs[1]);
    let done = api(
        &app,
        "POST",
        &format!("/api/internal/jobs/{upscale}/complete"),
        Some(json!({"result": {"image_url": "https://example.com/r.png"}, "duration": 5})),
    )
    .await;
    assert_eq!(done.body, json!({"success": true}));
    // (A /v1 claim answers before the read model has it: only /api waits.)
    claim(vec!["text-to-image"]).await;
    let s = api_eventually(&app, "/api/jobs/stats", |b| counts(b) != [3, 2, 0, 1, 0]).await;
    assert_eq!(
        (counts(&s), &s["timeframe"]),
        ([3, 1, 1, 1, 0], &json!("day"))
    );

    for bad in ["year", "DAY", "1h"] {
        let b = api(
            &app,
            "GET",
            &format!("/api/jobs/stats?timeframe={bad}"),
            None,
        )
        .await;
        assert_eq!(
            (b.status, b.body),
            (
                StatusCode::BAD_REQUEST,
                json!({"success": false, "error": {"code": "INVALID_TIMEFRAME",
                    "message": "Timeframe must be hour, day, or week"}})
            )
        );
    }
    app.stop().await;
}

/// Seed: "should cancel workflows through API" and "should handle job completion
/// affecting workflow progress" (there by writing Redis by hand; here a worker claims and
/// reports through the API and the orchestrator releases the next step).
#[tokio::test]
async fn workflow_progress_cancel_and_stats() {
    let app = seed_app("seed_workflows", false).await;

    // The seed's cancel test: both steps unstarted, both cancelled.
    let w = api(&app, "POST", "/api/workflows", Some(json!({"name": "Workflow to Cancel",
        "steps": [{"type": "text-to-image", "prompt": "step 1"}, {"type": "upscale", "depends_on": [0]}]}))).await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    let cancelled_wf = w.str("workflow_id");
    let c = api(
        &app,
        "POST",
        &format!("/api/workflows/{cancelled_wf}/cancel"),
        Some(json!({"reason": "Integration test cancellation"})),
    )
    .await;
    assert_eq!(
        (c.status, c.body),
        (
            StatusCode::OK,
            json!({"success": true, "message": "Workflow cancelled (2/2 jobs cancelled)"})
        )
    );
    let s = api(
        &app,
        "GET",
        &format!("/api/workflows/{cancelled_wf}/status"),
        None,
    )
    .await;
    assert_eq!(s.body["workflow"]["status"], "cancelled");
    shape(&s.body["workflow"], WORKFLOW);
    assert!(s.body["workflow"]["completed_at"].is_string());
    for step in s.body["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "cancelled", "{step}");
    }

    // Progress: a worker runs step 0 through the internal routes.
    let w = api(
        &app,
        "POST",
        "/api/workflows",
        Some(json!({"name": "Progress Test Workflow", "steps": [
            {"type": "text-to-image", "prompt": "First step"},
            {"type": "upscale", "depends_on": [0]}
        ]})),
    )
    .await;
    let wf = w.str("workflow_id");
    let jobs = ids(&w.body["job_ids"]);
    let claim = api(
        &app,
        "POST",
        "/v1/workers/w1/claim",
        Some(json!({"machine_id": "m1", "capabilities": ["text-to-image", "upscale"]})),
    )
    .await;
    assert_eq!(claim.status, StatusCode::OK, "{}", claim.body);
    let p = api(
        &app,
        "POST",
        &format!("/api/internal/jobs/{}/progress", jobs[0]),
        Some(
            json!({"progress": 50, "stage": "sampling", "message": "half way",
            "worker_id": "w1", "machine_id": "m1"}),
        ),
    )
    .await;
    assert_eq!(
        (p.status, p.body),
        (StatusCode::OK, json!({"success": true}))
    );
    let job = api(&app, "GET", &format!("/api/jobs/{}/status", jobs[0]), None)
        .await
        .body["job"]
        .clone();
    shape(&job, JOB);
    assert_eq!(
        (
            &job["status"],
            &job["progress"],
            &job["worker_id"],
            &job["machine_id"],
            &job["workflow_id"]
        ),
        (
            &json!("running"),
            &json!(50),
            &json!("w1"),
            &json!("m1"),
            &json!(wf)
        )
    );
    assert!(job["started_at"].is_string());
    // The orchestrator records the step start: the workflow runs.
    api_eventually(&app, &format!("/api/workflows/{wf}/status"), |b| {
        b["workflow"]["status"] == "running"
    })
    .await;
    let d = api(
        &app,
        "POST",
        &format!("/api/internal/jobs/{}/complete", jobs[0]),
        Some(json!({"result": {"image_url": "https://example.com/result.jpg"}, "duration": 900})),
    )
    .await;
    assert_eq!(
        (d.status, d.body),
        (StatusCode::OK, json!({"success": true}))
    );
    // Step 1 is released, the workflow is half done.
    let b = api_eventually(&app, &format!("/api/workflows/{wf}/status"), |b| {
        b["workflow"]["completed_steps"] == 1 && b["steps"][1]["status"] == "pending"
    })
    .await;
    assert_eq!(b["workflow"]["progress_percentage"].as_f64(), Some(50.0));
    assert_eq!(
        b["steps"][0]["result"],
        json!({"image_url": "https://example.com/result.jpg"})
    );
    assert!(b["steps"][0]["completed_at"].is_string());
    // Late reports on a finished job are refused.
    let late = api(
        &app,
        "POST",
        &format!("/api/internal/jobs/{}/progress", jobs[0]),
        Some(json!({"progress": 60})),
    )
    .await;
    seed_error(&late, StatusCode::CONFLICT, "INVALID_TRANSITION");

    // Cancelling now cancels the one job left (the completed step stays completed).
    let c = api(
        &app,
        "POST",
        &format!("/api/workflows/{wf}/cancel"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        c.body,
        json!({"success": true, "message": "Workflow cancelled (1/2 jobs cancelled)"})
    );
    let again = api(
        &app,
        "POST",
        &format!("/api/workflows/{wf}/cancel"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        again.body,
        json!({"success": false, "message": "Cannot cancel workflow in status: cancelled"})
    );

    // The orchestrator handles the same `workflow_cancelled` events with the same keys:
    // no job is cancelled twice and nothing stalls.
    api_eventually(&app, "/v1/projections", |b| {
        b["projections"].as_array().is_some_and(|rows| {
            let orchestrator: Vec<&Value> = rows
                .iter()
                .filter(|r| r["projection"] == "orchestrator")
                .collect();
            !orchestrator.is_empty()
                && orchestrator
                    .iter()
                    .all(|r| r["lag"] == 0 && r["state"] == "running" && r["last_error"].is_null())
        })
    })
    .await;
    let s = api(
        &app,
        "GET",
        &format!("/api/workflows/{cancelled_wf}/status"),
        None,
    )
    .await;
    let mut expected: Vec<(String, usize)> = s.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["job_id"].as_str().unwrap().to_owned(), 1))
        .collect();
    expected.extend([(jobs[0].clone(), 0), (jobs[1].clone(), 1)]);
    for (job, cancellations) in &expected {
        let events = api(&app, "GET", &format!("/v1/jobs/{job}/events"), None).await;
        assert_eq!(events.status, StatusCode::OK, "{}", events.body);
        let text = events.body.to_string();
        assert_eq!(
            text.matches("\"job_cancelled\"").count(),
            *cancellations,
            "{job}: {}",
            events.body
        );
    }

    // Workflow stats: every workflow, whatever the timeframe (list model: eventually).
    let b = api_eventually(&app, "/api/workflows/stats?timeframe=hour", |b| {
        b["stats"]["cancelled"] == 2
    })
    .await;
    shape(
        &b,
        &[
            ("success", T::Bool),
            ("stats", T::Obj),
            ("timeframe", T::Str),
        ],
    );
    assert_eq!(
        b["stats"],
        json!({"total": 2, "pending": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 2})
    );
    assert_eq!(b["timeframe"], "hour");
    seed_error(
        &api(&app, "GET", "/api/workflows/stats?timeframe=x", None).await,
        StatusCode::BAD_REQUEST,
        "INVALID_TIMEFRAME",
    );
    app.stop().await;
}

/// Seed: "should handle validation errors gracefully", "should handle not found resources
/// gracefully" and "should return healthy status when all services are running"; plus
/// `x-api-key`, malformed bodies, unknown routes, correlation ids and the OpenAPI document.
#[tokio::test]
async fn errors_auth_health_and_openapi() {
    let app = seed_app("seed_errors", false).await;

    // Validation: 400 with the route's code and "validation failed".
    let cases = [
        (
            "/api/jobs/submit",
            json!({"type": "invalid-type", "prompt": "This should fail"}),
            "JOB_SUBMISSION_FAILED",
        ),
        (
            "/api/jobs/submit",
            json!({"type": "text-to-image"}),
            "JOB_SUBMISSION_FAILED",
        ),
        (
            "/api/jobs/submit",
            json!({"type": "upscale", "priority": "high"}),
            "JOB_SUBMISSION_FAILED",
        ),
        (
            "/api/jobs/submit",
            json!({"type": "upscale", "priority": 101}),
            "JOB_SUBMISSION_FAILED",
        ),
        (
            "/api/workflows",
            json!({"name": "", "steps": []}),
            "WORKFLOW_CREATION_FAILED",
        ),
        (
            "/api/workflows",
            json!({"name": "w", "steps": [{"type": "upscale", "depends_on": [0]}]}),
            "WORKFLOW_CREATION_FAILED",
        ),
        (
            "/api/workflows",
            json!({"name": "w", "steps": [{"type": "bogus"}]}),
            "WORKFLOW_CREATION_FAILED",
        ),
    ];
    for (path, body, code) in cases {
        let v = api(&app, "POST", path, Some(body.clone())).await;
        seed_error(&v, StatusCode::BAD_REQUEST, code);
        shape(&v.body, &[("success", T::Bool), ("error", T::Obj)]);
        shape(&v.body["error"], &[("code", T::Str), ("message", T::Str)]);
        let message = v.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("validation failed"), "{body}: {message}");
    }
    // Malformed JSON: the same shape, never plain text.
    let raw = app
        .client
        .post(format!("{}/api/jobs/submit", app.base))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "JOB_SUBMISSION_FAILED", "{body}");

    // Not found.
    let n = api(&app, "GET", "/api/jobs/nonexistent-job/status", None).await;
    seed_error(&n, StatusCode::NOT_FOUND, "JOB_NOT_FOUND");
    assert_eq!(
        n.body["error"]["message"],
        "Job with ID nonexistent-job not found"
    );
    let n = api(
        &app,
        "GET",
        "/api/workflows/nonexistent-workflow/status",
        None,
    )
    .await;
    seed_error(&n, StatusCode::NOT_FOUND, "WORKFLOW_NOT_FOUND");
    let n = api(
        &app,
        "POST",
        &format!("/api/jobs/{}/cancel", uuid::Uuid::now_v7()),
        Some(json!({})),
    )
    .await;
    seed_error(&n, StatusCode::NOT_FOUND, "JOB_NOT_FOUND");
    assert_eq!(n.body["message"], "Job not found");
    let n = api(&app, "POST", "/api/workflows/nope/cancel", Some(json!({}))).await;
    seed_error(&n, StatusCode::NOT_FOUND, "WORKFLOW_NOT_FOUND");
    for path in [
        "/api/internal/jobs/nope/progress",
        "/api/internal/jobs/nope/complete",
    ] {
        let n = api(&app, "POST", path, Some(json!({"progress": 1}))).await;
        seed_error(&n, StatusCode::NOT_FOUND, "JOB_NOT_FOUND");
    }
    let n = api(&app, "GET", "/api/unknown", None).await;
    seed_error(&n, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        n.body["error"]["message"],
        "Endpoint GET /api/unknown not found"
    );

    // Auth: every /api route needs the key; the error is in the seed's shape.
    for (path, method) in [
        ("/api/jobs/stats", "GET"),
        ("/api/jobs/submit", "POST"),
        ("/api/workflows", "POST"),
        ("/api/internal/jobs/x/progress", "POST"),
    ] {
        for headers in [vec![], vec![("x-api-key", "wrong")]] {
            let u = app.call(method, path, Some(&json!({})), &headers).await;
            seed_error(&u, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        }
    }
    let b = app
        .call(
            "GET",
            "/api/jobs/stats",
            None,
            &[("authorization", &format!("Bearer {KEY}"))],
        )
        .await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);

    // The correlation id is echoed and stored on the command's events.
    let a = app
        .call(
            "POST",
            "/api/jobs/submit",
            Some(&json!({"type": "upscale"})),
            &[("x-api-key", KEY), ("x-correlation-id", "seed-corr-1")],
        )
        .await;
    assert_eq!(
        a.headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some("seed-corr-1")
    );
    let events = api(
        &app,
        "GET",
        &format!("/v1/jobs/{}/events", a.str("job_id")),
        None,
    )
    .await;
    assert!(
        events
            .body
            .to_string()
            .contains("\"correlation_id\":\"seed-corr-1\""),
        "{}",
        events.body
    );

    // Health stays open and has the seed's checks.
    let h = app.get("/health").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    assert_eq!(h.body["status"], "healthy");
    assert!(h.body["checks"]["redis"].is_string(), "{}", h.body);
    for check in ["message_bus", "job_service", "workflow_service"] {
        assert_eq!(h.body["checks"][check]["status"], "healthy", "{}", h.body);
    }
    assert!(h.body["timestamp"].is_string());

    // The OpenAPI document (open too) covers this surface.
    let doc = app.get("/openapi.json").await.body;
    for (p, m) in [
        ("/api/jobs/submit", "post"),
        ("/api/jobs/{id}/status", "get"),
        ("/api/jobs/{id}/cancel", "post"),
        ("/api/jobs/stats", "get"),
        ("/api/workflows", "post"),
        ("/api/workflows/{id}/status", "get"),
        ("/api/workflows/{id}/cancel", "post"),
        ("/api/workflows/stats", "get"),
        ("/api/internal/jobs/{id}/progress", "post"),
        ("/api/internal/jobs/{id}/complete", "post"),
    ] {
        assert!(
            doc["paths"][p][m].is_object(),
            "{m} {p} missing from the OpenAPI document"
        );
    }
    app.stop().await;
}

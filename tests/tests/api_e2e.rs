//! End-to-end: `jobsource serve` on real Redis and PostgreSQL, driven over HTTP.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use jobsource_http::HttpConfig;
use jobsource_tests::{spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn claim_body(caps: &[&str]) -> Value {
    json!({"machine_id": "m1", "capabilities": caps})
}

#[tokio::test]
async fn job_lifecycle_and_audit_trail() {
    let app = spawn_app("e2e_lifecycle").await;
    let a = app
        .call(
            "POST",
            "/v1/jobs",
            Some(&json!({"type": "upscale", "prompt": "cat"})),
            &[("x-correlation-id", "lifecycle-1")],
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.headers["x-correlation-id"], "lifecycle-1");
    let id = a.str("job_id");
    let view = app.job_at(&id, &a.str("position")).await;
    assert_eq!(view["status"], "pending");
    let a = app
        .post(
            &format!("/v1/jobs/{id}/assign"),
            json!({"worker_id": "w1", "machine_id": "m1"}),
        )
        .await;
    assert_eq!(a.body["status"], "assigned");
    let a = app
        .post(&format!("/v1/jobs/{id}/progress"), json!({"progress": 50}))
        .await;
    assert_eq!(a.body["status"], "running");
    let a = app
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"result": {"url": "s3://x"}}),
        )
        .await;
    let view = app.job_at(&id, &a.str("position")).await;
    assert_eq!(
        (view["status"].as_str(), view["progress"].as_u64()),
        (Some("completed"), Some(100))
    );
    assert_eq!(view["result"]["url"], "s3://x");
    assert!(view["completed_at"].is_string() && view["started_at"].is_string());
    // Lists come from PostgreSQL: wait for that model with the same position.
    let list = app
        .get(&format!(
            "/v1/jobs?status=completed&min_position={}",
            a.str("position")
        ))
        .await;
    assert_eq!(list.body["items"][0]["id"], id.as_str());
    let trail = app.get(&format!("/v1/jobs/{id}/events")).await;
    let events = trail.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| e["stream"] == format!("job-{id}")));
    assert_eq!(events[0]["correlation_id"], "lifecycle-1");
    let page = app.get("/v1/events?correlation_id=lifecycle-1").await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 1);
    // Time travel folds the history.
    let v2 = app.get(&format!("/v1/jobs/{id}?as_of_version=2")).await;
    assert_eq!(v2.body["status"], "assigned");
    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body["checks"]["redis"], "connected");
    assert_eq!(health.body["checks"]["postgres"], "connected");
    let projections = app.get("/v1/projections").await;
    let names: HashSet<&str> = projections.body["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["projection"].as_str().unwrap())
        .collect();
    for n in ["redis", "postgres", "archive", "orchestrator"] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn retries_until_terminal_failure_and_cancel_rules() {
    let app = spawn_app("e2e_retries").await;
    let id = app
        .submit(json!({"type": "upscale", "max_retries": 2}))
        .await;
    let fail = json!({"error": {"code": "E", "message": "boom"}});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        app.post(
            &format!("/v1/jobs/{id}/assign"),
            json!({"worker_id": "w", "machine_id": "m"}),
        )
        .await;
        statuses.push(
            app.post(&format!("/v1/jobs/{id}/fail"), fail.clone())
                .await
                .str("status"),
        );
    }
    assert_eq!(statuses, ["pending", "pending", "failed"]);
    let a = app
        .post(
            &format!("/v1/jobs/{id}/assign"),
            json!({"worker_id": "w", "machine_id": "m"}),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "INVALID_TRANSITION")
    );
    assert_eq!(a.body["error"]["current_status"], "failed");
    let pending = app.submit(json!({"type": "upscale"})).await;
    assert_eq!(
        app.post(&format!("/v1/jobs/{pending}/cancel"), json!({}))
            .await
            .str("status"),
        "cancelled"
    );
    let running = app.submit(json!({"type": "upscale"})).await;
    app.post(
        &format!("/v1/jobs/{running}/assign"),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    let a = app
        .post(&format!("/v1/jobs/{running}/cancel"), json!({}))
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "INVALID_TRANSITION")
    );
    app.stop().await;
}

#[tokio::test]
async fn diamond_workflow_runs_to_completion() {
    let app = spawn_app("e2e_diamond").await;
    let a = app
        .post(
            "/v1/workflows",
            json!({"name": "diamond", "steps": [
                {"type": "upscale"},
                {"type": "upscale", "depends_on": [0]},
                {"type": "controlnet", "depends_on": [0]},
                {"type": "upscale", "depends_on": [1, 2]},
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let wf = a.str("workflow_id");
    let jobs: Vec<String> = a.body["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_owned())
        .collect();
    // Every step job exists as soon as the create answered (read from the store's history).
    for j in &jobs {
        assert_eq!(
            app.get(&format!("/v1/jobs/{j}/events")).await.status,
            StatusCode::OK
        );
    }
    let caps = claim_body(&["upscale", "controlnet"]);
    let mut order = Vec::new();
    for round in [1usize, 2, 1] {
        let mut claimed = Vec::new();
        // Wait until the round's jobs are released and visible as pending.
        for _ in 0..500 {
            let c = app.post("/v1/workers/w1/claim", caps.clone()).await;
            if c.status == StatusCode::OK {
                claimed.push(c.body["job"]["id"].as_str().unwrap().to_owned());
                if claimed.len() == round {
                    break;
                }
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        assert_eq!(
            claimed.len(),
            round,
            "round of {round} jobs was never claimable"
        );
        for j in &claimed {
            let a = app
                .post(
                    &format!("/v1/jobs/{j}/complete"),
                    json!({"result": {"j": j}}),
                )
                .await;
            assert_eq!(a.status, StatusCode::OK);
        }
        order.push(claimed);
    }
    assert_eq!(order[0], [jobs[0].clone()]);
    assert_eq!(
        order[1].iter().collect::<HashSet<_>>(),
        [&jobs[1], &jobs[2]].into_iter().collect()
    );
    assert_eq!(order[2], [jobs[3].clone()]);
    let done = app
        .eventually(&format!("/v1/workflows/{wf}"), |w| {
            w["status"] == "completed"
        })
        .await;
    assert_eq!(
        (
            done["completed_steps"].as_u64(),
            done["progress_percentage"].as_u64()
        ),
        (Some(4), Some(100))
    );
    let steps = done["steps"].as_array().unwrap();
    assert!(
        steps.iter().all(|s| s["status"] == "completed"),
        "{steps:?}"
    );
    let trail = app.get(&format!("/v1/workflows/{wf}/events")).await;
    let types: Vec<&str> = trail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "workflow_step_completed")
            .count(),
        4
    );
    assert_eq!(types.last(), Some(&"workflow_completed"));
    // Events caused by other events carry their causation id.
    assert!(trail.body["events"].as_array().unwrap()[1]["causation_id"].is_string());
    let stats = app
        .eventually("/v1/workflows/stats", |s| s["by_status"]["completed"] == 1)
        .await;
    assert_eq!(stats["total"], 1);
    app.stop().await;
}

#[tokio::test]
async fn failure_and_cancellation_cascade() {
    let app = spawn_app("e2e_cascade").await;
    let steps =
        json!([{"type": "upscale"}, {"type": "upscale", "depends_on": [0]}, {"type": "upscale"}]);
    let a = app
        .post("/v1/workflows", json!({"name": "fails", "steps": steps}))
        .await;
    let wf = a.str("workflow_id");
    let jobs: Vec<String> = a.body["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_owned())
        .collect();
    app.post(
        &format!("/v1/jobs/{}/assign", jobs[0]),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    let f = app
        .post(
            &format!("/v1/jobs/{}/fail", jobs[0]),
            json!({"error": {"code": "X", "message": "no"}, "retryable": false}),
        )
        .await;
    assert_eq!(f.str("status"), "failed");
    let w = app
        .eventually(&format!("/v1/workflows/{wf}"), |w| {
            w["status"] == "failed"
                && w["steps"][1]["status"] == "cancelled"
                && w["steps"][2]["status"] == "cancelled"
        })
        .await;
    assert_eq!(w["error"]["code"], "X");
    // Cancelling a workflow cancels what has not started, not what is running.
    let a = app.post("/v1/workflows", json!({"name": "cancel", "steps": [{"type": "upscale"}, {"type": "upscale"}, {"type": "upscale", "depends_on": [0]}]})).await;
    let wf = a.str("workflow_id");
    let jobs: Vec<String> = a.body["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_owned())
        .collect();
    app.post(
        &format!("/v1/jobs/{}/assign", jobs[0]),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    let c = app
        .post(
            &format!("/v1/workflows/{wf}/cancel"),
            json!({"reason": "user"}),
        )
        .await;
    assert_eq!(c.str("status"), "cancelled");
    app.eventually(&format!("/v1/workflows/{wf}"), |w| {
        w["steps"][0]["status"] == "assigned"
            && w["steps"][1]["status"] == "cancelled"
            && w["steps"][2]["status"] == "cancelled"
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn claims_priority_fifo_capabilities_and_no_double_assignment() {
    // One partition: strict priority order (across partitions claims go round robin;
    // tests/tests/job_queue.rs checks that bound).
    let app = jobsource_tests::app::spawn_app_config("e2e_claims", |c| c.partitions = 1).await;
    let low = app.submit(json!({"type": "upscale", "priority": 5})).await;
    let first = app.submit(json!({"type": "upscale", "priority": 80})).await;
    let second = app.submit(json!({"type": "upscale", "priority": 80})).await;
    let gpu = app
        .submit(
            json!({"type": "upscale", "priority": 99, "requirements": {"capabilities": ["cuda"]}}),
        )
        .await;
    let last = app.submit(json!({"type": "upscale", "priority": 1})).await;
    app.eventually("/v1/jobs/stats", |s| s["total"] == 5).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let c = app
            .post("/v1/workers/w/claim", claim_body(&["upscale"]))
            .await;
        assert_eq!(c.status, StatusCode::OK, "{}", c.body);
        got.push(c.body["job"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, [first, second, low, last]);
    assert_eq!(
        app.post("/v1/workers/w/claim", claim_body(&["upscale"]))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let c = app.post("/v1/workers/g/claim", claim_body(&["cuda"])).await;
    assert_eq!(c.body["job"]["id"].as_str(), Some(gpu.as_str()));

    // 32 concurrent claimers over 20 jobs: every job claimed exactly once.
    let mut ids = HashSet::new();
    for _ in 0..20 {
        ids.insert(app.submit(json!({"type": "render"})).await);
    }
    app.eventually("/v1/jobs/stats", |s| s["by_type"]["render"] == 20)
        .await;
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (client, base) = (app.client.clone(), app.base.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let res = client
                    .post(format!("{base}/v1/workers/w{w}/claim"))
                    .json(&json!({"machine_id": format!("m{w}"), "capabilities": ["render"]}))
                    .send()
                    .await
                    .unwrap();
                if res.status() == StatusCode::NO_CONTENT {
                    return mine;
                }
                assert_eq!(res.status(), StatusCode::OK);
                let body: Value = res.json().await.unwrap();
                mine.push(body["job"]["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    assert_eq!(claimed.len(), 20, "each job once: {claimed:?}");
    assert_eq!(claimed.iter().cloned().collect::<HashSet<_>>(), ids);
    for id in &ids {
        let trail = app.get(&format!("/v1/jobs/{id}/events")).await;
        let assigned = trail.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "job_assigned")
            .count();
        assert_eq!(assigned, 1, "job {id} assigned {assigned} times");
    }
    app.stop().await;
}

#[tokio::test]
async fn error_codes_idempotency_if_match_and_auth() {
    let app = spawn_app_with(
        "e2e_errors",
        HttpConfig {
            api_keys: vec!["k1".into()],
            body_limit: 4096,
            ..HttpConfig::default()
        },
    )
    .await;
    let auth = [("authorization", "Bearer k1")];
    let call =
        |m: &'static str, p: String, b: Option<Value>, extra: Vec<(&'static str, String)>| {
            let app = &app;
            async move {
                let mut h: Vec<(&str, &str)> = auth.to_vec();
                for (k, v) in &extra {
                    h.push((k, v.as_str()));
                }
                app.call(m, &p, b.as_ref(), &h).await
            }
        };
    // 401
    let a = app.post("/v1/jobs", json!({"type": "upscale"})).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let a = app
        .call("GET", "/v1/jobs", None, &[("x-api-key", "k1")])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // 400
    let a = call("POST", "/v1/jobs".into(), Some(json!({"type": 7})), vec![]).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "MALFORMED_REQUEST")
    );
    // 413
    let a = call(
        "POST",
        "/v1/jobs".into(),
        Some(json!({"type": "upscale", "prompt": "x".repeat(10_000)})),
        vec![],
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
    // 422
    let a = call(
        "POST",
        "/v1/jobs".into(),
        Some(json!({"type": "upscale", "priority": 101})),
        vec![],
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
    );
    // 404
    let missing = uuid::Uuid::now_v7();
    let a = call("POST", format!("/v1/jobs/{missing}/cancel"), None, vec![]).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::NOT_FOUND, "JOB_NOT_FOUND")
    );
    let a = call(
        "POST",
        format!("/v1/workflows/{missing}/cancel"),
        None,
        vec![],
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::NOT_FOUND, "WORKFLOW_NOT_FOUND")
    );
    // Idempotency: same key + body -> same answer, nothing appended; other body -> 422.
    let key = vec![("idempotency-key", "same-1".to_owned())];
    let first = call(
        "POST",
        "/v1/jobs".into(),
        Some(json!({"type": "upscale"})),
        key.clone(),
    )
    .await;
    let again = call(
        "POST",
        "/v1/jobs".into(),
        Some(json!({"type": "upscale"})),
        key.clone(),
    )
    .await;
    assert_eq!(
        (first.status, again.status),
        (StatusCode::CREATED, StatusCode::OK)
    );
    assert_eq!(first.body["job_id"], again.body["job_id"]);
    assert_eq!(first.body["position"], again.body["position"]);
    let other = call(
        "POST",
        "/v1/jobs".into(),
        Some(json!({"type": "controlnet"})),
        key,
    )
    .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    // 409 on a stale If-Match, with the current version.
    let id = first.str("job_id");
    let a = call(
        "POST",
        format!("/v1/jobs/{id}/assign"),
        Some(json!({"worker_id": "w", "machine_id": "m"})),
        vec![("if-match", "3".into())],
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "VERSION_CONFLICT")
    );
    assert_eq!(a.body["error"]["current_version"], 1);
    let a = call(
        "POST",
        format!("/v1/jobs/{id}/assign"),
        Some(json!({"worker_id": "w", "machine_id": "m"})),
        vec![("if-match", "1".into())],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // min_position on lists.
    let a = call(
        "GET",
        format!("/v1/jobs?min_position={}", a.str("position")),
        None,
        vec![],
    )
    .await;
    assert_eq!(a.body["items"][0]["status"], "assigned");
    // health and openapi stay open.
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    assert_eq!(app.get("/openapi.json").await.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_commands_on_one_job_are_serialized() {
    let app = spawn_app("e2e_hot").await;
    let id = app.submit(json!({"type": "upscale"})).await;
    app.post(
        &format!("/v1/jobs/{id}/assign"),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let (client, base, id) = (app.client.clone(), app.base.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/jobs/{id}/progress"))
                .json(&json!({"progress": i + 1}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == StatusCode::OK, "{s}");
        ok += 1;
    }
    assert_eq!(ok, 32);
    let trail = app.get(&format!("/v1/jobs/{id}/events")).await;
    let versions: Vec<u64> = trail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "contiguous"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_the_documented_names() {
    let app = spawn_app("e2e_metrics").await;
    let id = app.submit(json!({"type": "upscale"})).await;
    let key = [("idempotency-key", "m-1")];
    let body = json!({"worker_id": "w", "machine_id": "m"});
    app.call("POST", &format!("/v1/jobs/{id}/assign"), Some(&body), &key)
        .await;
    app.call("POST", &format!("/v1/jobs/{id}/assign"), Some(&body), &key)
        .await;
    app.eventually("/v1/jobs/stats", |s| s["total"] == 1).await;
    // The sampler refreshes lag gauges every few seconds; wait for one round.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let text = loop {
        let text = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("jobsource_projection_lag_events")
            || tokio::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for name in [
        "jobsource_events_appended_total{type=\"job_submitted\"}",
        "jobsource_append_duration_seconds_bucket",
        "jobsource_idempotent_replays_total",
        "jobsource_projection_lag_events",
        "jobsource_projection_stalled_partitions",
        "jobsource_projection_batch_duration_seconds_bucket",
        "jobsource_http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"201\"}",
        "jobsource_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    app.stop().await;
}

/// Pages `GET /v1/events?<query>` four at a time to the end; returns the event ids.
async fn page_all(app: &jobsource_tests::TestApp, query: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = "start".to_owned();
    for _ in 0..100 {
        let p = app
            .get(&format!("/v1/events?limit=4&{query}&after={after}"))
            .await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
        for e in p.body["events"].as_array().unwrap() {
            seen.push(e["event_id"].as_str().unwrap().to_owned());
        }
        after = p.str("next_cursor");
        if !p.body["more"].as_bool().unwrap() {
            break;
        }
    }
    seen
}

#[tokio::test]
async fn event_pages_span_the_archive_and_the_live_log() {
    let app = spawn_app("e2e_events").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let corr = format!("corr-{}", i % 2);
        let a = app
            .call(
                "POST",
                "/v1/jobs",
                Some(&json!({"type": "upscale"})),
                &[("x-correlation-id", corr.as_str())],
            )
            .await;
        ids.push(a.str("job_id"));
    }
    // Whatever the archive has reached, paging yields every event once.
    let live = page_all(&app, "types=job_*").await;
    assert_eq!(live.len(), 6);
    assert_eq!(live.iter().collect::<HashSet<_>>().len(), 6);
    // Once the archive has everything, the same pages come from it.
    app.eventually("/v1/projections", |p| {
        p["projections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["projection"] == "archive")
            .all(|r| r["lag"] == 0)
    })
    .await;
    let archived = page_all(&app, "types=job_*").await;
    assert_eq!(
        archived.iter().collect::<HashSet<_>>(),
        live.iter().collect::<HashSet<_>>()
    );
    // Sequential submits: global order is append order (event ids are UUID v7).
    let mut sorted = archived.clone();
    sorted.sort();
    assert_eq!(archived, sorted, "archive pages follow the global order");
    assert_eq!(page_all(&app, "correlation_id=corr-1").await.len(), 3);
    let one = page_all(&app, &format!("stream=job-{}", ids[0])).await;
    assert_eq!(one.len(), 1);
    app.stop().await;
}

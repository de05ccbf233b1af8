//! The seed-compatible `/api` surface on a live server (real Redis and PostgreSQL): a port
//! of the seed's service integration tests (Phase 3 guide, section 17.1: job lifecycle,
//! cancel, stats, workflow lifecycle and cancel, validation and not-found errors, health),
//! plus the shapes of every route and `x-api-key` auth.

use std::path::PathBuf;

use jobsource_api::http::HttpConfig;
use jobsource_tests::app::spawn_app_config;
use jobsource_tests::{redis_connection, redis_url, TestApp};
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "test_api_key";

fn catalog() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../job-types.example.toml")
}

/// A server with the seed's API key and job types; `bare` uses the seed's bare Redis keys
/// (`JOBSOURCE_READ_PREFIX` empty) — only one test may, since those keys are shared.
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

async fn api(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> jobsource_tests::Answer {
    app.call(method, path, body.as_ref(), &[("x-api-key", KEY)])
        .await
}

#[tokio::test]
async fn job_lifecycle_cancel_and_the_seed_keys() {
    let app = seed_app("seed_lifecycle", true).await;
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
    assert_eq!(
        (a.body["success"].as_bool(), a.body["status"].as_str()),
        (Some(true), Some("submitted"))
    );
    let job_id = a.str("job_id");
    // Readable as soon as the command answered.
    let s = api(&app, "GET", &format!("/api/jobs/{job_id}/status"), None).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["success"], true);
    let job = &s.body["job"];
    assert_eq!(
        (
            job["id"].as_str(),
            job["type"].as_str(),
            job["status"].as_str(),
            job["progress"].as_u64()
        ),
        (
            Some(job_id.as_str()),
            Some("text-to-image"),
            Some("pending"),
            Some(0)
        )
    );
    assert!(job["created_at"].is_string());
    // The seed's bare keys, as services reading Redis directly expect them.
    let mut conn = redis_connection(&redis_url()).await.unwrap();
    let hash: std::collections::HashMap<String, String> =
        conn.hgetall(format!("job:{job_id}")).await.unwrap();
    assert_eq!(
        (hash["type"].as_str(), hash["status"].as_str()),
        ("text-to-image", "pending")
    );
    let score: Option<f64> = conn.zscore("jobs:pending", &job_id).await.unwrap();
    assert_eq!(score, Some(75.0));

    // Cancel through the API.
    let c = api(
        &app,
        "POST",
        &format!("/api/jobs/{job_id}/cancel"),
        Some(json!({"reason": "Integration test cancellation"})),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(
        c.body,
        json!({"success": true, "message": "Job cancelled successfully"})
    );
    let s = api(&app, "GET", &format!("/api/jobs/{job_id}/status"), None).await;
    assert_eq!(s.body["job"]["status"], "cancelled");
    let again = api(
        &app,
        "POST",
        &format!("/api/jobs/{job_id}/cancel"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        again.body,
        json!({"success": false, "message": "Cannot cancel job in status: cancelled"})
    );

    // Workflow lifecycle with the seed's keys.
    let w = api(&app, "POST", "/api/workflows", Some(json!({
        "name": "Integration Test Workflow", "description": "Multi-step workflow for testing",
        "steps": [
            {"type": "text-to-image", "prompt": "Base image", "parameters": {"width": 512, "height": 512}},
            {"type": "upscale", "parameters": {"scale_factor": 2}, "depends_on": [0]}
        ],
        "webhook_url": "https://example.com/workflow-webhook"
    }))).await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    let wf = w.str("workflow_id");
    let jobs: Vec<String> = w.body["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(jobs.len(), 2);
    let s = api(&app, "GET", &format!("/api/workflows/{wf}/status"), None).await;
    assert_eq!(s.status, StatusCode::OK);
    let body = &s.body;
    assert_eq!(
        (
            body["workflow"]["id"].as_str(),
            body["workflow"]["name"].as_str(),
            body["workflow"]["status"].as_str()
        ),
        (
            Some(wf.as_str()),
            Some("Integration Test Workflow"),
            Some("pending")
        )
    );
    assert_eq!(
        (
            body["workflow"]["total_steps"].as_u64(),
            body["workflow"]["completed_steps"].as_u64()
        ),
        (Some(2), Some(0))
    );
    assert_eq!(body["workflow"]["progress_percentage"].as_f64(), Some(0.0));
    assert_eq!(
        (
            body["steps"][0]["step_index"].as_u64(),
            body["steps"][0]["job_id"].as_str(),
            body["steps"][0]["status"].as_str()
        ),
        (Some(0), Some(jobs[0].as_str()), Some("pending"))
    );
    assert_eq!(
        (
            body["steps"][1]["job_id"].as_str(),
            body["steps"][1]["status"].as_str()
        ),
        (Some(jobs[1].as_str()), Some("waiting"))
    );
    let whash: std::collections::HashMap<String, String> =
        conn.hgetall(format!("workflow:{wf}")).await.unwrap();
    assert_eq!(
        (whash["name"].as_str(), whash["total_steps"].as_str()),
        ("Integration Test Workflow", "2")
    );
    let deps: Vec<String> = conn
        .smembers(format!("job:{}:depends_on", jobs[1]))
        .await
        .unwrap();
    assert_eq!(deps, [jobs[0].clone()]);

    // Clean the shared bare keys this test wrote.
    let mut keys = vec![
        format!("job:{job_id}"),
        format!("workflow:{wf}"),
        format!("workflow:{wf}:jobs"),
        "projection:redis:checkpoint".to_owned(),
        "projection:redis:state".to_owned(),
    ];
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
    for set in [
        "jobs:pending",
        "jobs:assigned",
        "jobs:completed",
        "jobs:failed",
    ] {
        let _: () = redis::cmd(if set == "jobs:pending" {
            "ZREM"
        } else {
            "SREM"
        })
        .arg(set)
        .arg(&members)
        .query_async(&mut conn)
        .await
        .unwrap();
    }
    app.stop().await;
}

#[tokio::test]
async fn stats_workflow_cancel_internal_routes_and_errors() {
    let app = seed_app("seed_stats", false).await;
    for t in ["text-to-image", "upscale", "text-to-image"] {
        let a = api(
            &app,
            "POST",
            "/api/jobs/submit",
            Some(json!({"type": t, "prompt": format!("{t} job")})),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let s = api(&app, "GET", "/api/jobs/stats?timeframe=day", None).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["success"], true);
    assert_eq!(s.body["timeframe"], "day");
    let stats = &s.body["stats"];
    assert_eq!(
        [
            &stats["total"],
            &stats["pending"],
            &stats["running"],
            &stats["completed"],
            &stats["failed"]
        ],
        [&json!(3), &json!(3), &json!(0), &json!(0), &json!(0)]
    );
    assert!(stats["by_type"].is_object());
    let bad = api(&app, "GET", "/api/jobs/stats?timeframe=year", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body,
        json!({"success": false, "error": {"code": "INVALID_TIMEFRAME", "message": "Timeframe must be hour, day, or week"}})
    );

    // Workflow cancel counts the jobs it cancelled.
    let w = api(&app, "POST", "/api/workflows", Some(json!({"name": "Workflow to Cancel",
        "steps": [{"type": "text-to-image", "prompt": "step 1"}, {"type": "upscale", "depends_on": [0]}]}))).await;
    let wf = w.str("workflow_id");
    let c = api(
        &app,
        "POST",
        &format!("/api/workflows/{wf}/cancel"),
        Some(json!({"reason": "Integration test cancellation"})),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(
        c.body,
        json!({"success": true, "message": "Workflow cancelled (2/2 jobs cancelled)"})
    );
    let s = api(&app, "GET", &format!("/api/workflows/{wf}/status"), None).await;
    assert_eq!(s.body["workflow"]["status"], "cancelled");
    // Workflow stats come from the PostgreSQL list model, which follows within milliseconds.
    let mut ws = api(&app, "GET", "/api/workflows/stats?timeframe=hour", None).await;
    for _ in 0..200 {
        if ws.body["stats"]["cancelled"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        ws = api(&app, "GET", "/api/workflows/stats?timeframe=hour", None).await;
    }
    assert_eq!(ws.body["stats"]["cancelled"], 1, "{}", ws.body);
    assert_eq!(ws.body["stats"]["total"], 1);
    assert_eq!(
        api(&app, "GET", "/api/workflows/stats?timeframe=x", None)
            .await
            .body["error"]["code"],
        "INVALID_TIMEFRAME"
    );

    // Workers report through the internal routes.
    let a = api(
        &app,
        "POST",
        "/api/jobs/submit",
        Some(json!({"type": "upscale"})),
    )
    .await;
    let id = a.str("job_id");
    let assigned = api(
        &app,
        "POST",
        &format!("/v1/jobs/{id}/assign"),
        Some(json!({"worker_id": "w", "machine_id": "m"})),
    )
    .await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
    let p = api(
        &app,
        "POST",
        &format!("/api/internal/jobs/{id}/progress"),
        Some(json!({"progress": 40, "stage": "upscaling", "worker_id": "w", "machine_id": "m"})),
    )
    .await;
    assert_eq!(
        (p.status, p.body.clone()),
        (StatusCode::OK, json!({"success": true}))
    );
    assert_eq!(
        api(&app, "GET", &format!("/api/jobs/{id}/status"), None)
            .await
            .body["job"]["progress"],
        40
    );
    let d = api(
        &app,
        "POST",
        &format!("/api/internal/jobs/{id}/complete"),
        Some(json!({"result": {"url": "x"}, "duration": 1200})),
    )
    .await;
    assert_eq!(d.body, json!({"success": true}));
    let s = api(&app, "GET", &format!("/api/jobs/{id}/status"), None).await;
    assert_eq!(
        (
            s.body["job"]["status"].as_str(),
            s.body["job"]["result"]["url"].as_str()
        ),
        (Some("completed"), Some("x"))
    );
    let late = api(
        &app,
        "POST",
        &format!("/api/internal/jobs/{id}/progress"),
        Some(json!({"progress": 50})),
    )
    .await;
    assert_eq!(late.status, StatusCode::CONFLICT);

    // Validation and not-found errors in the seed's shape.
    let v = api(
        &app,
        "POST",
        "/api/jobs/submit",
        Some(json!({"type": "invalid-type", "prompt": "This should fail"})),
    )
    .await;
    assert_eq!(v.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (
            v.body["success"].as_bool(),
            v.body["error"]["code"].as_str()
        ),
        (Some(false), Some("JOB_SUBMISSION_FAILED"))
    );
    assert!(v.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("validation failed"));
    let v = api(
        &app,
        "POST",
        "/api/workflows",
        Some(json!({"name": "", "steps": []})),
    )
    .await;
    assert_eq!(
        (v.status, v.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("WORKFLOW_CREATION_FAILED"))
    );
    assert!(v.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("validation failed"));
    let v = api(
        &app,
        "POST",
        "/api/jobs/submit",
        Some(json!({"type": "upscale", "priority": "high"})),
    )
    .await;
    assert_eq!(
        (v.status, v.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("JOB_SUBMISSION_FAILED"))
    );
    let n = api(&app, "GET", "/api/jobs/nonexistent-job/status", None).await;
    assert_eq!(n.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (
            n.body["success"].as_bool(),
            n.body["error"]["code"].as_str()
        ),
        (Some(false), Some("JOB_NOT_FOUND"))
    );
    let n = api(
        &app,
        "GET",
        &format!("/api/workflows/{}/status", uuid::Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(
        (n.status, n.body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("WORKFLOW_NOT_FOUND"))
    );
    let n = api(
        &app,
        "POST",
        &format!("/api/jobs/{}/cancel", uuid::Uuid::now_v7()),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (n.status, n.body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Job not found"))
    );

    // Auth: x-api-key required on /api, in the seed's error shape; health stays open.
    let u = app.call("GET", "/api/jobs/stats", None, &[]).await;
    assert_eq!(
        (
            u.status,
            u.body["success"].as_bool(),
            u.body["error"]["code"].as_str()
        ),
        (StatusCode::UNAUTHORIZED, Some(false), Some("UNAUTHORIZED"))
    );
    let h = app.get("/health").await;
    assert_eq!(h.status, StatusCode::OK);
    for check in [
        "redis",
        "postgres",
        "message_bus",
        "job_service",
        "workflow_service",
        "projections",
    ] {
        assert!(
            !h.body["checks"][check].is_null(),
            "health check {check} missing: {}",
            h.body
        );
    }
    assert_eq!(h.body["status"], "healthy");
    assert!(h.body["timestamp"].is_string());
    // The OpenAPI document covers this surface.
    let doc = app.get("/openapi.json").await.body;
    for p in [
        "/api/jobs/submit",
        "/api/jobs/{id}/status",
        "/api/workflows/{id}/cancel",
        "/api/internal/jobs/{id}/complete",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
    app.stop().await;
}

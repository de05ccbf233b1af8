//! Security and readiness through the HTTP surfaces on real Redis and PostgreSQL:
//! `JOBSOURCE_WEBHOOK_DENY_PRIVATE` refuses non-public webhook targets at submission on
//! both APIs, URLs with credentials are refused, and `/health/ready` answers both shapes.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use jobsource_tests::app::{spawn_app, spawn_app_config};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_webhook_targets_are_refused_when_the_policy_is_on() {
    let app = spawn_app_config("security_deny_private", |c| {
        c.webhooks.deny_private = true;
    })
    .await;
    for url in [
        "http://127.0.0.1:9/hook",
        "https://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://[::1]/hook",
    ] {
        let a = app
            .post("/v1/jobs", json!({"type": "t", "webhook_url": url}))
            .await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            a.body
        );
        assert_eq!(
            a.fields().first().map(String::as_str),
            Some("webhook_url"),
            "{url}: {}",
            a.body
        );
    }
    let w = app
        .post(
            "/v1/workflows",
            json!({"name": "w", "steps": [{"type": "t"}], "webhook_url": "http://192.168.1.2/x"}),
        )
        .await;
    assert_eq!(w.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", w.body);
    let seed = app
        .post(
            "/api/jobs/submit",
            json!({"type": "t", "webhook_url": "http://127.0.0.1/x"}),
        )
        .await;
    assert!(seed.status.is_client_error(), "{}", seed.body);
    assert_eq!(seed.body["success"], false, "{}", seed.body);
    // A public literal address is fine (nothing is sent: the job never completes).
    let ok = app
        .post(
            "/v1/jobs",
            json!({"type": "t", "webhook_url": "https://8.8.8.8/hook"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_webhook_urls_are_refused_and_ready_answers_both_shapes() {
    let app = spawn_app("security_credentials").await;
    let a = app
        .post(
            "/v1/jobs",
            json!({"type": "t", "webhook_url": "https://user:secret@example.com/hook"}),
        )
        .await;
    assert!(a.status.is_client_error(), "{}", a.body);
    assert_eq!(
        a.fields().first().map(String::as_str),
        Some("webhook_url"),
        "{}",
        a.body
    );
    // Without the policy a private target is accepted (the default, for local setups).
    let local = app
        .post(
            "/v1/jobs",
            json!({"type": "t", "webhook_url": "http://127.0.0.1:9/x"}),
        )
        .await;
    assert_eq!(local.status, StatusCode::CREATED, "{}", local.body);

    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["ready"], true);
    assert_eq!(ready.body["status"], "ready");
    assert!(ready.body["timestamp"].as_str().unwrap().ends_with('Z'));
    app.stop().await;
}

//! Lease timers across real process deaths: `jobsource serve` (the binary) on real Redis
//! and PostgreSQL is killed with SIGKILL while a job's lease runs, its deadline passes
//! while nothing runs, and a restarted process expires it right after start, exactly once.
//! Then two processes sweep the same store at once: every lease still expires once.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{post, Serve};
use jobsource_tests::{cleanup_prefix, redis_target, unique_prefix, TestDatabase};
use serde_json::{json, Value};

async fn expiries(base: &str, id: &str) -> usize {
    let body: Value = reqwest::get(format!("{base}/v1/jobs/{id}/events"))
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    body["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["type"] == "job_lease_expired")
                .count()
        })
        .unwrap_or(0)
}

async fn submit_and_claim(base: &str, lease_seconds: u64) -> String {
    let (s, b) = post(base, "/v1/jobs", json!({"type": "upscale"})).await;
    assert_eq!(s, 201, "{b}");
    let id = b["job_id"].as_str().expect("job_id").to_owned();
    let (s, b) = post(
        base,
        "/v1/workers/w1/claim",
        json!({"machine_id": "m1", "capabilities": ["upscale"], "lease_seconds": lease_seconds,
            "wait_ms": 2000}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_restart_expires_once_and_two_processes_expire_once() {
    let prefix = unique_prefix("kill9");
    let db = TestDatabase::create().await;

    // 1. A lease running when the process dies, its deadline passing while nothing runs.
    let first = Serve::start(&prefix, &db.url).await;
    let id = submit_and_claim(&first.base, 2).await;
    let (s, b) = post(
        &first.base,
        &format!("/v1/jobs/{id}/progress"),
        json!({"progress": 10, "worker_id": "w1"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    first.kill9();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let restarted = Serve::start(&prefix, &db.url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while expiries(&restarted.base, &id).await == 0 {
        assert!(Instant::now() < deadline, "the missed deadline never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(expiries(&restarted.base, &id).await, 1);
    // Out of the way of the claims below (it is pending again, for its retry).
    let (s, b) = post(&restarted.base, &format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(s, 200, "{b}");

    // 2. Two processes sweeping the same store: each lease expires exactly once.
    let second = Serve::start(&prefix, &db.url).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let base = if i % 2 == 0 {
            &restarted.base
        } else {
            &second.base
        };
        ids.push(submit_and_claim(base, 1).await);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while expiries(&second.base, id).await == 0 {
            assert!(Instant::now() < deadline, "lease of {id} never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for id in &ids {
        assert_eq!(expiries(&restarted.base, id).await, 1, "job {id}");
    }
    drop(restarted);
    drop(second);
    let _ = cleanup_prefix(redis_target(), &prefix).await;
    db.drop_db().await;
}

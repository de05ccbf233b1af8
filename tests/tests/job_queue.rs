//! End-to-end: the job queue on `jobsource serve`, on real Redis + PostgreSQL and
//! embedded (each scenario runs in both modes): lease expiry and reclaim, renewals,
//! retries exhausted into `LEASE_EXPIRED`, delays and retry backoff, GPU matching,
//! concurrent claimers, claim order across partitions, two sweepers, offline machines,
//! long-polling and complete-with-next, and bad input that changes nothing.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobsource_api::serve::ServeConfig;
use jobsource_app::service::{leases, Service};
use jobsource_eventstore::EventStore;
use jobsource_tests::app::spawn_app_config;
use jobsource_tests::{redis_url, Answer, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug)]
enum Mode {
    Durable,
    Embedded,
}

/// A server in `mode` with fast timers (lease sweep 50 ms, retry backoff 50 ms).
async fn app(test: &str, mode: Mode, tune: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_app_config(test, |c| {
        c.lease_sweep = Duration::from_millis(50);
        c.queue.retry_backoff = Duration::from_millis(50);
        if let Mode::Embedded = mode {
            c.redis_url = None;
            c.database_url = None;
        }
        tune(c);
    })
    .await
}

/// Runs an async scenario `$f(mode)` as one test per mode.
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod durable {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::Mode::Durable).await })*
        }
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::Mode::Embedded).await })*
        }
    };
}

both_modes!(
    an_unrenewed_lease_expires_and_the_job_is_claimed_again,
    renewals_keep_a_lease_alive,
    expiries_exhaust_the_retries_into_lease_expired,
    delays_hold,
    retry_backoff_holds,
    gpu_matching,
    concurrent_claimers_assign_each_job_once,
    claims_across_partitions_reach_a_higher_priority_job_within_a_round,
    an_offline_machine_hands_its_jobs_back,
    long_polls_and_complete_hands_out_the_next_job,
    bad_input_is_refused_and_changes_nothing,
    a_seed_workers_report_claims_a_pending_job,
    lookups_right_after_creates_never_answer_404,
);

fn claim_body(caps: &[&str], extra: Value) -> Value {
    let mut body = json!({"machine_id": "m1", "capabilities": caps});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn claim(app: &TestApp, worker: &str, caps: &[&str], extra: Value) -> Answer {
    app.post(
        &format!("/v1/workers/{worker}/claim"),
        claim_body(caps, extra),
    )
    .await
}

fn event_types(a: &Answer) -> Vec<String> {
    a.body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {}", a.body))
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn events_of(app: &TestApp, id: &str) -> Vec<String> {
    let a = app.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    event_types(&a)
}

/// Waits (10 s at most) until job `id`'s history has `n` events of type `kind`.
async fn until_events(app: &TestApp, id: &str, kind: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let types = events_of(app, id).await;
        if types.iter().filter(|t| *t == kind).count() >= n {
            return types;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never had {n} {kind}: {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

/// The job as the store folds it (`as_of_version` far ahead: the whole history).
async fn folded(app: &TestApp, id: &str) -> Value {
    let a = app
        .get(&format!("/v1/jobs/{id}?as_of_version=1000000"))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body
}

async fn an_unrenewed_lease_expires_and_the_job_is_claimed_again(mode: Mode) {
    let app = app("lease_expiry", mode, |_| {}).await;
    let id = app.submit(json!({"type": "upscale"})).await;
    let first = claim(&app, "w1", &["upscale"], json!({"lease_seconds": 1})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["job"]["id"], id.as_str());
    assert!(
        first.body["job"]["lease_expires_at"].is_string(),
        "{}",
        first.body
    );
    let types = until_events(&app, &id, "job_lease_expired", 1).await;
    assert_eq!(
        &types[..],
        [
            "job_submitted",
            "job_assigned",
            "job_lease_expired",
            "job_failed"
        ]
    );
    let job = folded(&app, &id).await;
    assert_eq!(job["status"], "pending");
    assert_eq!(job["retry_count"], 1);
    assert_eq!(job["error"]["code"], "LEASE_EXPIRED");
    let second = claim(&app, "w2", &["upscale"], json!({"wait_ms": 3000})).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["job"]["id"], id.as_str());
    assert_eq!(second.body["job"]["attempt"], 2);
    assert_eq!(second.body["job"]["worker_id"], "w2");
    // Late reports from the expired holder: 409 with the current status.
    for (route, body) in [
        ("progress", json!({"progress": 10, "worker_id": "w1"})),
        ("complete", json!({"result": {}, "worker_id": "w1"})),
        (
            "fail",
            json!({"error": {"code": "X", "message": "x"}, "worker_id": "w1"}),
        ),
    ] {
        let late = app.post(&format!("/v1/jobs/{id}/{route}"), body).await;
        assert_eq!(late.status, StatusCode::CONFLICT, "{route}: {}", late.body);
        assert_eq!(late.code(), "INVALID_TRANSITION");
        assert_eq!(late.body["error"]["current_status"], "assigned");
    }
    let hb = app
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"worker_id": "w1"}),
        )
        .await;
    assert_eq!(hb.status, StatusCode::CONFLICT, "{}", hb.body);
    let done = app
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"result": {"ok": true}, "worker_id": "w2"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    app.stop().await;
}

async fn renewals_keep_a_lease_alive(mode: Mode) {
    let app = app("lease_renewal", mode, |_| {}).await;
    let id = app.submit(json!({"type": "upscale"})).await;
    let got = claim(&app, "w1", &["upscale"], json!({"lease_seconds": 1})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let mut last = got.body["job"]["lease_expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    // Heartbeats for 2.5 s of a 1 s lease.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hb = app
            .post(
                &format!("/v1/jobs/{id}/heartbeat"),
                json!({"worker_id": "w1"}),
            )
            .await;
        assert_eq!(hb.status, StatusCode::OK, "{}", hb.body);
        let deadline = hb.str("lease_expires_at");
        assert!(deadline > last, "{deadline} after {last}");
        last = deadline;
    }
    // Progress reports renew too.
    for p in [10, 20, 30, 40, 50] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = app
            .post(
                &format!("/v1/jobs/{id}/progress"),
                json!({"progress": p, "worker_id": "w1"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let view = app
        .eventually(&format!("/v1/jobs/{id}"), |j| j["progress"] == 50)
        .await;
    assert_eq!(view["status"], "running");
    assert!(
        view["lease_expires_at"].as_str().unwrap() > last.as_str(),
        "the view shows the renewed deadline: {view}"
    );
    let other = app
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"worker_id": "w2"}),
        )
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.body);
    assert_eq!(other.body["error"]["current_status"], "running");
    let types = events_of(&app, &id).await;
    assert_eq!(count(&types, "job_lease_expired"), 0, "{types:?}");
    let missing = app
        .post(
            &format!("/v1/jobs/{}/heartbeat", uuid::Uuid::now_v7()),
            json!({"worker_id": "w1"}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    app.stop().await;
}

async fn expiries_exhaust_the_retries_into_lease_expired(mode: Mode) {
    let app = app("lease_exhaust", mode, |_| {}).await;
    let id = app
        .submit(json!({"type": "upscale", "max_retries": 1}))
        .await;
    for n in 1..=2 {
        let got = claim(
            &app,
            "w1",
            &["upscale"],
            json!({"lease_seconds": 1, "wait_ms": 3000}),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "claim {n}: {}", got.body);
        until_events(&app, &id, "job_lease_expired", n).await;
    }
    let job = folded(&app, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "LEASE_EXPIRED");
    assert_eq!(job["retry_count"], 2);
    let none = claim(&app, "w1", &["upscale"], json!({})).await;
    assert_eq!(none.status, StatusCode::NO_CONTENT, "{}", none.body);
    let events = app.get(&format!("/v1/jobs/{id}/events")).await;
    let last = events.body["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["type"], "job_failed");
    assert_eq!(last["data"]["will_retry"], false);
    app.stop().await;
}

async fn delays_hold(mode: Mode) {
    let app = app("delays", mode, |_| {}).await;
    let submitted = Instant::now();
    let id = app
        .submit(json!({"type": "upscale", "delay_ms": 1500}))
        .await;
    let view = app
        .eventually(&format!("/v1/jobs/{id}"), |j| j["status"] == "pending")
        .await;
    assert!(view["available_at"].is_string(), "{view}");
    let early = claim(&app, "w1", &["upscale"], json!({})).await;
    assert_eq!(early.status, StatusCode::NO_CONTENT, "{}", early.body);
    let got = claim(&app, "w1", &["upscale"], json!({"wait_ms": 5000})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert!(
        submitted.elapsed() >= Duration::from_millis(1400),
        "claimed after {:?}",
        submitted.elapsed()
    );
    // run_at works the same.
    let at = (chrono::Utc::now() + chrono::Duration::milliseconds(1000)).to_rfc3339();
    let start = Instant::now();
    let id2 = app.submit(json!({"type": "upscale", "run_at": at})).await;
    let got = claim(&app, "w1", &["upscale"], json!({"wait_ms": 5000})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["job"]["id"], id2.as_str());
    assert!(start.elapsed() >= Duration::from_millis(900));
    app.stop().await;
}

async fn retry_backoff_holds(mode: Mode) {
    let app = app("backoff", mode, |c| {
        c.queue.retry_backoff = Duration::from_millis(800)
    })
    .await;
    let id = app.submit(json!({"type": "upscale"})).await;
    let got = claim(&app, "w1", &["upscale"], json!({})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let failed_at = Instant::now();
    let a = app
        .post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"error": {"code": "OOM", "message": "out of memory"}, "worker_id": "w1"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["status"], "pending");
    let early = claim(&app, "w1", &["upscale"], json!({})).await;
    assert_eq!(early.status, StatusCode::NO_CONTENT, "{}", early.body);
    let again = claim(&app, "w1", &["upscale"], json!({"wait_ms": 5000})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    // Equal jitter: at least half of the 800 ms backoff.
    assert!(
        failed_at.elapsed() >= Duration::from_millis(380),
        "retried after {:?}",
        failed_at.elapsed()
    );
    assert_eq!(again.body["job"]["attempt"], 2);
    app.stop().await;
}

async fn gpu_matching(mode: Mode) {
    let app = app("gpu", mode, |_| {}).await;
    let big = app
        .submit(json!({"type": "render", "priority": 90,
            "requirements": {"capabilities": ["render"], "gpu_memory": 24}}))
        .await;
    let plain = app.submit(json!({"type": "render", "priority": 10})).await;
    // No GPU: only the job without a GPU need.
    let a = claim(&app, "cpu", &["render"], json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["job"]["id"], plain.as_str());
    let a = claim(&app, "cpu", &["render"], json!({})).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    // Too small a GPU.
    let a = claim(&app, "small", &["render"], json!({"gpu_memory": 16})).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    // Missing capability.
    let a = claim(&app, "other", &["upscale"], json!({"gpu_memory": 48})).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = claim(
        &app,
        "big",
        &["render", "upscale"],
        json!({"gpu_memory": 24}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["job"]["id"], big.as_str());
    app.stop().await;
}

async fn concurrent_claimers_assign_each_job_once(mode: Mode) {
    let app = Arc::new(app("claimers", mode, |_| {}).await);
    let mut ids = HashSet::new();
    let submits = futures::future::join_all((0..1000).map(|i| {
        let app = app.clone();
        async move {
            app.submit(json!({"type": "upscale", "priority": i % 7}))
                .await
        }
    }))
    .await;
    ids.extend(submits);
    let claimed = futures::future::join_all((0..64).map(|w| {
        let app = app.clone();
        async move {
            let mut mine = Vec::new();
            loop {
                let a = claim(&app, &format!("w{w}"), &["upscale"], json!({})).await;
                match a.status {
                    StatusCode::OK => mine.push(a.body["job"]["id"].as_str().unwrap().to_owned()),
                    StatusCode::NO_CONTENT => return mine,
                    other => panic!("claim answered {other}: {}", a.body),
                }
            }
        }
    }))
    .await;
    let all: Vec<String> = claimed.into_iter().flatten().collect();
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), 1000, "every job claimed once");
    assert_eq!(unique, ids);
    for id in ids.iter().take(200) {
        let types = events_of(&app, id).await;
        assert_eq!(count(&types, "job_assigned"), 1, "{id}: {types:?}");
    }
    Arc::try_unwrap(app).ok().expect("last handle").stop().await;
}

async fn claims_across_partitions_reach_a_higher_priority_job_within_a_round(mode: Mode) {
    // 4 partitions (the harness default): a high-priority job submitted behind 40
    // low-priority ones is claimed within about one claim per partition.
    let app = app("claim_order", mode, |_| {}).await;
    for _ in 0..40 {
        app.submit(json!({"type": "upscale", "priority": 1})).await;
    }
    let high = app.submit(json!({"type": "upscale", "priority": 99})).await;
    let mut n = 0;
    loop {
        n += 1;
        let a = claim(&app, "w", &["upscale"], json!({})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        if a.body["job"]["id"] == high.as_str() {
            break;
        }
    }
    assert!(n <= 5, "the priority-99 job came only at claim {n}");
    app.stop().await;
}

async fn an_offline_machine_hands_its_jobs_back(mode: Mode) {
    let app = app("offline_machine", mode, |c| {
        c.machine_timeout = Duration::from_secs(1)
    })
    .await;
    let reg = app
        .post(
            "/v1/machines",
            json!({"machine_id": "gpu-box-1", "capabilities": ["upscale"]}),
        )
        .await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.body);
    let id = app.submit(json!({"type": "upscale"})).await;
    let got = app
        .post(
            "/v1/workers/w1/claim",
            json!({"machine_id": "gpu-box-1", "capabilities": ["upscale"], "lease_seconds": 3600}),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    // No machine heartbeat: offline after ~1 s, and its lease expires at once (not in an hour).
    let types = until_events(&app, &id, "job_lease_expired", 1).await;
    assert_eq!(count(&types, "job_lease_expired"), 1, "{types:?}");
    let job = folded(&app, &id).await;
    assert_eq!(job["status"], "pending");
    let events = app.get(&format!("/v1/jobs/{id}/events")).await;
    let failed = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "job_failed")
        .cloned()
        .unwrap();
    assert!(
        failed["data"]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("offline"),
        "{failed}"
    );
    let machine = app
        .eventually("/v1/machines/gpu-box-1", |m| m["status"] == "offline")
        .await;
    assert_eq!(machine["status"], "offline");
    app.stop().await;
}

async fn long_polls_and_complete_hands_out_the_next_job(mode: Mode) {
    let app = Arc::new(app("long_poll", mode, |_| {}).await);
    // A waiting claim gets a job submitted while it waits.
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { claim(&app, "w1", &["upscale"], json!({"wait_ms": 5000})).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = app.submit(json!({"type": "upscale"})).await;
    let started = Instant::now();
    let got = waiter.await.expect("waiter");
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["job"]["id"], first.as_str());
    assert!(started.elapsed() < Duration::from_secs(2));
    // Complete with next: the next job comes back in the same answer.
    let second = app.submit(json!({"type": "upscale"})).await;
    let done = app
        .post(
            &format!("/v1/jobs/{first}/complete"),
            json!({"result": {"ok": true}, "worker_id": "w1",
                "next": {"machine_id": "m1", "capabilities": ["upscale"]}}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["status"], "completed");
    assert_eq!(done.body["next"]["job"]["id"], second.as_str());
    assert_eq!(done.body["next"]["job"]["worker_id"], "w1");
    let done = app
        .post(
            &format!("/v1/jobs/{second}/complete"),
            json!({"result": {"ok": true}, "worker_id": "w1",
                "next": {"machine_id": "m1", "capabilities": ["upscale"]}}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body["next"].is_null(), "{}", done.body);
    // `next` needs the worker.
    let third = app.submit(json!({"type": "upscale"})).await;
    let a = claim(&app, "w1", &["upscale"], json!({})).await;
    assert_eq!(a.body["job"]["id"], third.as_str());
    let bad = app
        .post(
            &format!("/v1/jobs/{third}/complete"),
            json!({"result": {}, "next": {"machine_id": "m1"}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(bad.fields(), ["worker_id"]);
    let bad = app
        .post(
            &format!("/v1/jobs/{third}/complete"),
            json!({"result": {}, "worker_id": "w1",
                "next": {"machine_id": "m1", "lease_seconds": 0}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(bad.fields(), ["next.lease_seconds"]);
    assert_eq!(folded(&app, &third).await["status"], "assigned");
    Arc::try_unwrap(app).ok().expect("last handle").stop().await;
}

async fn bad_input_is_refused_and_changes_nothing(mode: Mode) {
    let app = app("queue_bad_input", mode, |_| {}).await;
    for (body, field) in [
        (json!({"type": "upscale", "delay_ms": -1}), "delay_ms"),
        (
            json!({"type": "upscale", "delay_ms": 40_000_000_000_i64}),
            "delay_ms",
        ),
        (json!({"type": "upscale", "run_at": "tomorrow"}), "run_at"),
        (
            json!({"type": "upscale", "run_at": "2999-01-01T00:00:00Z"}),
            "run_at",
        ),
        (
            json!({"type": "upscale", "delay_ms": 5, "run_at": "2026-01-01T00:00:00Z"}),
            "run_at",
        ),
        (
            json!({"type": "upscale", "requirements": {"capabilities": ["a"], "gpu_memory": -2}}),
            "requirements.gpu_memory",
        ),
    ] {
        let a = app.post("/v1/jobs", body.clone()).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            a.body
        );
        assert!(a.fields().contains(&field.to_owned()), "{body}: {}", a.body);
    }
    let id = app.submit(json!({"type": "upscale"})).await;
    for (extra, field) in [
        (json!({"lease_seconds": 0}), "lease_seconds"),
        (json!({"lease_seconds": 86401}), "lease_seconds"),
        (json!({"lease_seconds": -5}), "lease_seconds"),
        (json!({"gpu_memory": -1}), "gpu_memory"),
        (json!({"gpu_memory": 20000}), "gpu_memory"),
        (json!({"wait_ms": 30001}), "wait_ms"),
    ] {
        let a = claim(&app, "w1", &["upscale"], extra.clone()).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{extra}: {}",
            a.body
        );
        assert_eq!(a.fields(), [field], "{extra}: {}", a.body);
    }
    let a = app
        .post(
            &format!("/v1/jobs/{id}/assign"),
            json!({"worker_id": "w", "machine_id": "m", "lease_seconds": 0}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    let a = app
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"worker_id": ""}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    let a = app
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"worker_id": "w1"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "not assigned: {}", a.body);
    assert_eq!(a.body["error"]["current_status"], "pending");
    assert_eq!(events_of(&app, &id).await, ["job_submitted"]);
    // The job is still claimable after all of that.
    let a = claim(&app, "w1", &["upscale"], json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    app.stop().await;
}

/// Two instances sweeping the same store at once: each expired lease expires once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sweepers_expire_each_lease_once() {
    // The app's own sweeper is slowed down so the two below race each other.
    let app = app("two_sweepers", Mode::Durable, |c| {
        c.lease_sweep = Duration::from_secs(3600)
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.submit(json!({"type": "upscale"})).await);
    }
    for _ in 0..20 {
        let a = claim(&app, "w1", &["upscale"], json!({"lease_seconds": 1})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let instance = || async {
        let store: Arc<dyn EventStore> = Arc::new(app.connect_store().await);
        Arc::new(Service::new(store, None))
    };
    let (a, b) = (instance().await, instance().await);
    let (ea, eb) = tokio::join!(leases::sweep(&a), leases::sweep(&b));
    let (ea, eb) = (ea.expect("sweep a"), eb.expect("sweep b"));
    assert_eq!(ea + eb, 20, "each lease expired once ({ea} + {eb})");
    for id in &ids {
        let types = events_of(&app, id).await;
        assert_eq!(count(&types, "job_lease_expired"), 1, "{id}: {types:?}");
    }
    // A third sweep finds nothing.
    assert_eq!(leases::sweep(&a).await.expect("sweep"), 0);
    app.stop().await;
}

/// 32 claims waiting at once, then 32 jobs: every waiter gets one (each submission wakes a
/// waiter; none is left waiting while a job is ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_waiting_claim_gets_a_job_submitted_while_it_waits() {
    let app = Arc::new(app("many_waiters", Mode::Embedded, |_| {}).await);
    let waiters: Vec<_> = (0..32)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let a = claim(
                    &app,
                    &format!("w{w}"),
                    &["upscale"],
                    json!({"wait_ms": 20000}),
                )
                .await;
                (a.status, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..32 {
        app.submit(json!({"type": "upscale"})).await;
    }
    for w in waiters {
        let (status, took) = w.await.expect("waiter");
        assert_eq!(status, StatusCode::OK);
        assert!(
            took < Duration::from_secs(20),
            "answered before its wait ran out"
        );
    }
    Arc::try_unwrap(app).ok().expect("last handle").stop().await;
}

async fn a_seed_workers_report_claims_a_pending_job(mode: Mode) {
    let app = app("seed_worker_claim", mode, |_| {}).await;
    let id = app.submit(json!({"type": "upscale"})).await;
    let report = app
        .post(
            &format!("/api/internal/jobs/{id}/progress"),
            json!({"progress": 10, "worker_id": "sw1", "machine_id": "sm1"}),
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body, json!({"success": true}));
    let job = folded(&app, &id).await;
    assert_eq!(
        (&job["status"], &job["worker_id"], &job["attempt"]),
        (&json!("running"), &json!("sw1"), &json!(1))
    );
    let events = app.get(&format!("/v1/jobs/{id}/events")).await;
    let list = events.body["events"].as_array().unwrap();
    assert_eq!(
        event_types(&events),
        ["job_submitted", "job_assigned", "job_progress"]
    );
    assert_eq!(list[1]["data"]["worker_id"], "sw1");
    assert!(list[1]["data"]["lease_expires_at"].is_string());
    // It is held: not claimable, another seed worker is refused in the seed's shape.
    let none = claim(&app, "native", &["upscale"], json!({})).await;
    assert_eq!(none.status, StatusCode::NO_CONTENT, "{}", none.body);
    let other = app
        .post(
            &format!("/api/internal/jobs/{id}/progress"),
            json!({"progress": 20, "worker_id": "sw2", "machine_id": "sm2"}),
        )
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.body);
    assert_eq!(other.body["success"], false);
    assert_eq!(other.body["error"]["code"], "INVALID_TRANSITION");
    let hb = app
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"worker_id": "sw1"}),
        )
        .await;
    assert_eq!(
        hb.status,
        StatusCode::OK,
        "the claim has a lease: {}",
        hb.body
    );
    let done = app
        .post(
            &format!("/api/internal/jobs/{id}/complete"),
            json!({"result": {"ok": true}, "duration": 45.5, "worker_id": "sw1", "machine_id": "sm1"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let events = app.get(&format!("/v1/jobs/{id}/events")).await;
    let last = events.body["events"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["type"], "job_completed");
    assert_eq!(last["data"]["duration_ms"], 46);
    // A completion report on a pending job claims and completes it in one append.
    let second = app.submit(json!({"type": "upscale"})).await;
    let done = app
        .post(
            &format!("/api/internal/jobs/{second}/complete"),
            json!({"result": {}, "worker_id": "sw3", "machine_id": "sm3"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        events_of(&app, &second).await,
        ["job_submitted", "job_assigned", "job_completed"]
    );
    let bad = app
        .post(
            &format!("/api/internal/jobs/{second}/complete"),
            json!({"result": {}, "duration": -1}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    app.stop().await;
}

/// Read-your-writes lookups: the read model lags the log, so a lookup it cannot answer yet
/// folds the streams; a created entity is never a 404.
async fn lookups_right_after_creates_never_answer_404(mode: Mode) {
    let app = app("lookups_after_create", mode, |_| {}).await;
    for _ in 0..50 {
        let id = app.submit(json!({"type": "upscale"})).await;
        let a = app.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["status"], "pending");
        let seed = app.get(&format!("/api/jobs/{id}/status")).await;
        assert_eq!(seed.status, StatusCode::OK, "{}", seed.body);
        assert_eq!(seed.body["job"]["status"], "pending");
    }
    for _ in 0..10 {
        let w = app
            .post(
                "/v1/workflows",
                json!({"name": "w", "steps": [{"type": "upscale"}, {"type": "upscale", "depends_on": [0]}]}),
            )
            .await;
        assert_eq!(w.status, StatusCode::CREATED, "{}", w.body);
        let wf = app
            .get(&format!("/v1/workflows/{}", w.str("workflow_id")))
            .await;
        assert_eq!(wf.status, StatusCode::OK, "{}", wf.body);
        assert_eq!(
            wf.body["steps"].as_array().map(Vec::len),
            Some(2),
            "{}",
            wf.body
        );
        let seed = app
            .get(&format!("/api/workflows/{}/status", w.str("workflow_id")))
            .await;
        assert_eq!(seed.status, StatusCode::OK, "{}", seed.body);
        for job in w.body["job_ids"].as_array().unwrap() {
            let a = app
                .get(&format!("/v1/jobs/{}", job.as_str().unwrap()))
                .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        }
    }
    let missing = app.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// The expiry's store-side precondition: a heartbeat that lands after the sweeper read a
/// due lease but before it appended the expiry wins; nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewal_that_wins_the_race_cancels_the_expiry() {
    let app = app("renewal_race", Mode::Durable, |c| {
        c.lease_sweep = Duration::from_secs(3600)
    })
    .await;
    let id = app.submit(json!({"type": "upscale"})).await;
    let got = claim(&app, "w1", &["upscale"], json!({"lease_seconds": 1})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let store: Arc<dyn EventStore> = Arc::new(app.connect_store().await);
    let p = store.partition_of(&format!("job-{id}"));
    let due = store
        .due_leases(p, jobsource_eventstore::queue::now_ms(), 10)
        .await
        .expect("due leases");
    assert_eq!(due.len(), 1, "{due:?}");
    // The worker's heartbeat lands now, after the sweeper read the lease as due.
    let hb = app
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"worker_id": "w1"}),
        )
        .await;
    assert_eq!(hb.status, StatusCode::OK, "{}", hb.body);
    let sweeper = Service::new(store, None);
    let expired = leases::expire(&sweeper, &due[0], false, "lease expired")
        .await
        .expect("expire");
    assert!(!expired, "the renewal won");
    assert_eq!(
        events_of(&app, &id).await,
        ["job_submitted", "job_assigned"]
    );
    assert_eq!(folded(&app, &id).await["status"], "assigned");
    app.stop().await;
}

/// The `redis` read model's hashes carry the fields the seed's state synchronizer wrote
/// (correlation_id, assigned_at, message, duration, failed_at; step_details,
/// success_count, failed_count, completed_at) beside jobsource's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_redis_hashes_carry_the_seed_fields() {
    use redis::AsyncCommands;
    let app = app("seed_hash_fields", Mode::Durable, |_| {}).await;
    let conn = jobsource_tests::redis_connection(&redis_url())
        .await
        .expect("redis");
    let hash = |key: String| {
        let mut conn = conn.clone();
        async move {
            let h: std::collections::HashMap<String, String> =
                conn.hgetall(key).await.expect("hgetall");
            h
        }
    };
    let id = app.submit(json!({"type": "upscale"})).await;
    let got = claim(&app, "w1", &["upscale"], json!({})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let a = app
        .post(
            &format!("/v1/jobs/{id}/progress"),
            json!({"progress": 40, "message": "halfway", "worker_id": "w1"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = app
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"result": {"ok": true}, "duration_ms": 1234, "worker_id": "w1"}),
        )
        .await;
    app.job_at(&id, &a.str("position")).await;
    let h = hash(format!("{}:job:{id}", app.prefix)).await;
    for field in [
        "correlation_id",
        "assigned_at",
        "completed_at",
        "updated_at",
    ] {
        assert!(
            h.get(field).is_some_and(|v| !v.is_empty()),
            "{field} in {h:?}"
        );
    }
    assert_eq!(h["message"], "halfway");
    assert_eq!(h["duration"], "1234");
    // A terminal failure records failed_at.
    let failing = app
        .submit(json!({"type": "upscale", "max_retries": 0}))
        .await;
    let got = claim(&app, "w1", &["upscale"], json!({})).await;
    assert_eq!(got.body["job"]["id"], failing.as_str());
    let a = app
        .post(
            &format!("/v1/jobs/{failing}/fail"),
            json!({"error": {"code": "OOM", "message": "out of memory"}, "worker_id": "w1"}),
        )
        .await;
    app.job_at(&failing, &a.str("position")).await;
    let h = hash(format!("{}:job:{failing}", app.prefix)).await;
    assert_eq!(h["status"], "failed");
    assert!(!h["failed_at"].is_empty(), "{h:?}");
    // A completed workflow carries its step details and counts.
    let w = app
        .post(
            "/v1/workflows",
            json!({"name": "one", "steps": [{"type": "upscale"}]}),
        )
        .await;
    assert_eq!(w.status, StatusCode::CREATED, "{}", w.body);
    let wf = w.str("workflow_id");
    let got = claim(&app, "w1", &["upscale"], json!({"wait_ms": 2000})).await;
    let step = got.body["job"]["id"].as_str().unwrap().to_owned();
    let a = app
        .post(
            &format!("/v1/jobs/{step}/complete"),
            json!({"result": {"ok": 1}, "worker_id": "w1"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    app.eventually(&format!("/v1/workflows/{wf}"), |v| {
        v["status"] == "completed"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let h = loop {
        let h = hash(format!("{}:workflow:{wf}", app.prefix)).await;
        if h.get("status").map(String::as_str) == Some("completed") {
            break h;
        }
        assert!(Instant::now() < deadline, "{h:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(h["success_count"], "1");
    assert_eq!(h["failed_count"], "0");
    assert!(
        !h["completed_at"].is_empty() && !h["correlation_id"].is_empty(),
        "{h:?}"
    );
    let details: Value = serde_json::from_str(&h["step_details"]).expect("JSON step_details");
    assert_eq!(details[0]["job_id"], step.as_str());
    app.stop().await;
}

//! Webhooks end to end: `jobsource serve` on real Redis and PostgreSQL delivering to
//! small HTTP receivers run by the test (plain tokio, one request per connection).

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobsource_api::serve::ServeConfig;
use jobsource_app::webhooks::signature::{digest_hex, verify};
use jobsource_tests::app::spawn_app_config;
use jobsource_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "whsec-test-secret";

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// What a receiver answers to its `n`th request (0-based): a delay, then a status.
type Behaviour = dyn Fn(usize) -> (Duration, u16) + Send + Sync;

/// A webhook receiver on 127.0.0.1:<random port>.
struct Receiver {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    async fn start(behaviour: impl Fn(usize) -> (Duration, u16) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let count = Arc::new(AtomicUsize::new(0));
        let recorded = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (hits, behaviour, count) = (recorded.clone(), behaviour.clone(), count.clone());
                tokio::spawn(async move {
                    let Some(hit) = read_request(socket).await else {
                        return;
                    };
                    let (hit, mut socket) = hit;
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    hits.lock().unwrap().push(hit);
                    let (delay, status) = behaviour(n);
                    tokio::time::sleep(delay).await;
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\
                         content-type: application/json\r\nconnection: close\r\n\r\n{{}}"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Receiver { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits (up to `within`) for at least `n` requests.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} requests, expected {n}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn read_request(mut socket: TcpStream) -> Option<(Hit, TcpStream)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((
        Hit {
            path,
            headers,
            body,
            at: Instant::now(),
        },
        socket,
    ))
}

/// Fast retries for tests.
fn quick(config: &mut ServeConfig) {
    config.webhooks.initial_backoff = Duration::from_millis(50);
    config.webhooks.max_backoff = Duration::from_millis(200);
    config.webhooks.poll_interval = Duration::from_millis(20);
}

/// Submits a job with `webhook_url`, assigns it and completes it; returns its id.
async fn completed_job(app: &TestApp, url: &str) -> String {
    let id = app
        .submit(json!({"type": "upscale", "webhook_url": url}))
        .await;
    assign(app, &id).await;
    let a = app
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"result": {"url": "s3://out"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    id
}

async fn assign(app: &TestApp, id: &str) {
    let a = app
        .post(
            &format!("/v1/jobs/{id}/assign"),
            json!({"worker_id": "w", "machine_id": "m"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

async fn fail(app: &TestApp, id: &str, retryable: bool) -> String {
    let a = app
        .post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"error": {"code": "E", "message": "boom"}, "retryable": retryable}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.str("status")
}

/// Creates a workflow with `webhook_url` and runs its steps through claims: every step
/// completes, or the first one claimed fails for good when `fail_first`. Returns its id.
async fn run_workflow(app: &TestApp, url: &str, fail_first: bool) -> String {
    let a = app
        .post(
            "/v1/workflows",
            json!({"name": "hooked", "webhook_url": url, "steps": [
                {"type": "upscale"}, {"type": "upscale", "depends_on": [0]}
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let wf = a.str("workflow_id");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let w = app.get(&format!("/v1/workflows/{wf}")).await;
        let status = w.body["status"].as_str().unwrap_or("").to_owned();
        if status == "completed" || status == "failed" {
            return wf;
        }
        assert!(
            Instant::now() < deadline,
            "workflow never finished: {}",
            w.body
        );
        let c = app
            .post(
                "/v1/workers/w/claim",
                json!({"machine_id": "m", "capabilities": ["upscale"]}),
            )
            .await;
        if c.status == StatusCode::OK {
            let job = c.body["job"]["id"].as_str().unwrap().to_owned();
            if fail_first {
                fail(app, &job, false).await;
            } else {
                let a = app
                    .post(
                        &format!("/v1/jobs/{job}/complete"),
                        json!({"result": {"step": job}}),
                    )
                    .await;
                assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Deliveries of the app (every page), optionally filtered by status.
async fn deliveries(app: &TestApp, status: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/webhooks/deliveries?limit=2".to_owned();
        if let Some(s) = status {
            path.push_str(&format!("&status={s}"));
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let a = app.get(&path).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        out.extend(a.body["items"].as_array().unwrap().iter().cloned());
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Polls the deliveries until one for `url` satisfies `done`.
async fn delivery_where(app: &TestApp, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = deliveries(app, None).await;
        if let Some(d) = all.iter().find(|d| d["url"] == url && done(d)) {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no delivery to {url} reached the expected state: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An ISO-8601 UTC time with milliseconds (JavaScript's `toISOString()`).
fn assert_iso(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z') && s.len() == 24,
        "{s}"
    );
}

fn check_signature(hit: &Hit) {
    let header = hit.header("x-jobsource-signature");
    let (t, v1) = header
        .split_once(',')
        .unwrap_or_else(|| panic!("signature header {header:?}"));
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    // Recompute HMAC-SHA256("<t>.<body>") with the secret, as a receiver would.
    assert_eq!(v1, digest_hex(SECRET.as_bytes(), t, &hit.body).unwrap());
    let now = chrono::Utc::now().timestamp();
    assert!((now - t).abs() < 60, "timestamp {t} is not now ({now})");
    assert!(verify(SECRET.as_bytes(), header, &hit.body, now, 300));
    assert!(!verify(b"wrong secret", header, &hit.body, now, 300));
}

#[tokio::test]
async fn signed_payloads_for_every_delivered_event_type() {
    let receiver = Receiver::start(|_| (Duration::ZERO, 200)).await;
    let app = spawn_app_config("webhooks_signed", |c| {
        quick(c);
        c.webhooks.secret = Some(SECRET.into());
    })
    .await;

    let done = completed_job(&app, &receiver.url("/done")).await;
    // A retryable failure is not delivered; the terminal one is.
    let failing = app
        .submit(
            json!({"type": "upscale", "max_retries": 1, "webhook_url": receiver.url("/failed")}),
        )
        .await;
    assign(&app, &failing).await;
    assert_eq!(fail(&app, &failing, true).await, "pending");
    assign(&app, &failing).await;
    assert_eq!(fail(&app, &failing, true).await, "failed");
    // No webhook_url: nothing delivered.
    let silent = app.submit(json!({"type": "controlnet"})).await;
    assign(&app, &silent).await;
    let a = app
        .post(
            &format!("/v1/jobs/{silent}/complete"),
            json!({"result": {}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let wf_ok = run_workflow(&app, &receiver.url("/wf-ok"), false).await;
    let wf_failed = run_workflow(&app, &receiver.url("/wf-failed"), true).await;

    let hits = receiver.wait_for(4, Duration::from_secs(15)).await;
    // Give stray deliveries (there should be none) a moment to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits_now = receiver.hits();
    assert_eq!(hits_now.len(), 4, "{hits_now:#?}");
    let by_path: HashMap<&str, &Hit> = hits.iter().map(|h| (h.path.as_str(), h)).collect();
    for hit in &hits {
        check_signature(hit);
        let body = hit.json();
        assert_eq!(hit.header("content-type"), "application/json");
        assert_eq!(hit.header("x-jobsource-delivery"), body["delivery_id"]);
        assert_eq!(hit.header("x-jobsource-event"), body["type"]);
        assert_eq!(hit.header("x-jobsource-attempt"), "1");
        assert_eq!(body["event"]["type"], body["type"]);
        assert!(body["event"]["event_id"].is_string() && body["event"]["version"].is_u64());
        // The seed's webhook body beside jobsource's (one superset).
        assert_eq!(body["event_type"], body["type"]);
        assert!(
            body["status"] == "completed" || body["status"] == "failed",
            "{body}"
        );
        assert_iso(&body["completed_at"]);
        assert!(body["duration"].is_u64(), "{body}");
        assert_eq!(
            body["metadata"]["correlation_id"],
            body["event"]["correlation_id"]
        );
    }

    let job = by_path["/done"].json();
    assert_eq!(job["type"], "job_completed");
    assert_eq!(job["job_id"], done.as_str());
    assert_eq!(job["event"]["stream"], format!("job-{done}"));
    assert_eq!(job["event"]["data"]["result"]["url"], "s3://out");
    assert_eq!(job["status"], "completed");
    assert_eq!(job["result"], json!({"url": "s3://out"}));
    assert_eq!(job["metadata"]["worker_id"], "w");
    assert_eq!(job["metadata"]["machine_id"], "m");

    let failed = by_path["/failed"].json();
    assert_eq!(failed["type"], "job_failed");
    assert_eq!(failed["job_id"], failing.as_str());
    assert_eq!(failed["event"]["data"]["will_retry"], false);
    assert_eq!(failed["event"]["data"]["retry_count"], 2);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], json!({"code": "E", "message": "boom"}));
    assert_eq!(failed["retry_count"], 2);
    assert_iso(&failed["failed_at"]);
    assert!(failed["result"].is_null());
    assert_eq!(failed["metadata"]["worker_id"], "w");
    assert_eq!(failed["metadata"]["machine_id"], "m");

    let completed = by_path["/wf-ok"].json();
    assert_eq!(completed["type"], "workflow_completed");
    assert_eq!(completed["workflow_id"], wf_ok.as_str());
    let steps = completed["step_details"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s["status"] == "completed"));
    assert_eq!(steps[1]["step_index"], 1);
    assert!(steps[0]["result"]["step"].is_string());
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["name"], "hooked");
    assert_eq!(completed["total_steps"], 2);
    assert_eq!(completed["success_count"], 2);
    assert_eq!(completed["failed_count"], 0);
    for step in steps {
        assert!(
            step["job_id"].is_string() && step["error"].is_null(),
            "{step}"
        );
        assert_iso(&step["completed_at"]);
    }

    let wf_fail = by_path["/wf-failed"].json();
    assert_eq!(wf_fail["type"], "workflow_failed");
    assert_eq!(wf_fail["workflow_id"], wf_failed.as_str());
    assert_eq!(wf_fail["failed_step"], 0);
    assert!(wf_fail["error"].is_object(), "{wf_fail}");
    assert_eq!(wf_fail["status"], "failed");
    assert_eq!(wf_fail["name"], "hooked");
    assert_eq!(wf_fail["total_steps"], 2);
    assert_eq!(wf_fail["success_count"], 0);
    assert_eq!(wf_fail["failed_count"], 1);
    assert_iso(&wf_fail["failed_at"]);
    let steps = wf_fail["step_details"].as_array().unwrap();
    let status: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["failed", "pending"]);
    assert_eq!(steps[0]["error"], wf_fail["error"]);

    // Every delivery is recorded, delivered at the first attempt.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let all = deliveries(&app, Some("delivered")).await;
        if all.len() >= 4 {
            break all;
        }
        assert!(Instant::now() < deadline, "not all recorded: {all:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(all.len(), 4);
    for d in &all {
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_status_code"], 200);
        assert!(d["delivered_at"].is_string());
        assert_eq!(d["attempt_history"][0]["outcome"], "delivered");
    }
    assert!(deliveries(&app, Some("pending")).await.is_empty());
    let one = app
        .get(&format!(
            "/v1/webhooks/deliveries/{}",
            all[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["id"], all[0]["id"]);
    let bad = app.get("/v1/webhooks/deliveries?status=bogus").await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
    );
    // The enqueue subscriber shows with the projections.
    let projections = app.get("/v1/projections").await;
    assert!(projections.body["projections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["projection"] == "webhooks"));
    app.stop().await;
}

#[tokio::test]
async fn failing_receiver_gets_it_on_the_third_attempt() {
    let receiver = Receiver::start(|n| (Duration::ZERO, if n < 2 { 500 } else { 200 })).await;
    let app = spawn_app_config("webhooks_retry", quick).await;
    let url = receiver.url("/flaky");
    completed_job(&app, &url).await;

    let d = delivery_where(&app, &url, |d| d["status"] == "delivered").await;
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["last_status_code"], 200);
    let history = d["attempt_history"].as_array().unwrap();
    let summary: Vec<(u64, u64, &str)> = history
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status_code"].as_u64().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 500, "failed"),
            (2, 500, "failed"),
            (3, 200, "delivered")
        ]
    );
    assert!(history[0]["error"].as_str().unwrap().contains("500"));
    assert!(history[2]["error"].is_null());

    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    let ids: Vec<&str> = hits
        .iter()
        .map(|h| h.header("x-jobsource-delivery"))
        .collect();
    assert!(ids.iter().all(|id| *id == d["id"]), "{ids:?}");
    let attempts: Vec<&str> = hits
        .iter()
        .map(|h| h.header("x-jobsource-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(hits.iter().all(|h| h.body == hits[0].body));
    // Unsigned without a secret.
    assert!(hits
        .iter()
        .all(|h| h.header("x-jobsource-signature").is_empty()));
    // Backoff: the retries were not immediate.
    assert!(hits[1].at.duration_since(hits[0].at) >= Duration::from_millis(20));
    app.stop().await;
}

#[tokio::test]
async fn dead_receiver_is_dead_lettered_and_can_be_retried() {
    let healthy = Arc::new(AtomicBool::new(false));
    let up = healthy.clone();
    let receiver = Receiver::start(move |_| {
        (
            Duration::ZERO,
            if up.load(Ordering::SeqCst) { 200 } else { 503 },
        )
    })
    .await;
    let app = spawn_app_config("webhooks_dead", |c| {
        quick(c);
        c.webhooks.max_attempts = 3;
    })
    .await;
    let url = receiver.url("/down");
    let job = app
        .submit(json!({"type": "upscale", "max_retries": 0, "webhook_url": url}))
        .await;
    assign(&app, &job).await;
    assert_eq!(fail(&app, &job, true).await, "failed");

    let dead = delivery_where(&app, &url, |d| d["status"] == "dead").await;
    let id = dead["id"].as_str().unwrap().to_owned();
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["last_status_code"], 503);
    assert!(dead["next_attempt_at"].is_null());
    let outcomes: Vec<&str> = dead["attempt_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "dead"]);
    let listed = deliveries(&app, Some("dead")).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    // Dead stays dead: no further attempts.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.hits().len(), 3);

    let unknown = app
        .post(
            &format!("/v1/webhooks/deliveries/{}/retry", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "DELIVERY_NOT_FOUND")
    );
    let malformed = app
        .post("/v1/webhooks/deliveries/not-a-uuid/retry", json!({}))
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);

    healthy.store(true, Ordering::SeqCst);
    let retried = app
        .post(&format!("/v1/webhooks/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body["status"], "pending");
    assert_eq!(retried.body["requeues"], 1);
    let again = app
        .post(&format!("/v1/webhooks/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "INVALID_TRANSITION")
    );

    let delivered = delivery_where(&app, &url, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["id"], id.as_str());
    assert_eq!(delivered["attempts"], 4);
    assert_eq!(delivered["attempt_history"][3]["outcome"], "delivered");
    assert!(deliveries(&app, Some("dead")).await.is_empty());
    let hits = receiver.hits();
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[3].header("x-jobsource-delivery"), id);
    assert_eq!(hits[3].header("x-jobsource-attempt"), "4");
    // Delivered is not dead either.
    let done = app
        .post(&format!("/v1/webhooks/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(done.status, StatusCode::CONFLICT);
    assert_eq!(done.body["error"]["current_status"], "delivered");
    app.stop().await;
}

#[tokio::test]
async fn slow_receiver_does_not_delay_another() {
    let slow = Receiver::start(|_| (Duration::from_secs(10), 200)).await;
    let fast = Receiver::start(|_| (Duration::ZERO, 200)).await;
    let app = spawn_app_config("webhooks_slow", |c| {
        quick(c);
        // Long enough that the slow request is still in flight throughout.
        c.webhooks.timeout = Duration::from_secs(30);
    })
    .await;
    completed_job(&app, &slow.url("/slow")).await;
    slow.wait_for(1, Duration::from_secs(10)).await;

    let started = Instant::now();
    let job = completed_job(&app, &fast.url("/fast")).await;
    let hits = fast.wait_for(1, Duration::from_secs(10)).await;
    let took = hits[0].at.duration_since(started);
    assert!(
        took < Duration::from_secs(3),
        "the fast receiver waited {took:?}"
    );
    assert_eq!(hits[0].json()["job_id"], job.as_str());
    // The fast one is recorded as delivered while the slow one is still being answered.
    delivery_where(&app, &fast.url("/fast"), |d| d["status"] == "delivered").await;
    let pending = deliveries(&app, Some("pending")).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["url"], slow.url("/slow"));
    assert_eq!(pending[0]["attempts"], 0);
    // Projections were not held up either.
    app.eventually(&format!("/v1/jobs/{job}"), |j| j["status"] == "completed")
        .await;
    app.stop().await;
}

#[tokio::test]
async fn redelivery_keeps_the_delivery_id_and_replay_adds_nothing() {
    // The first request is answered too late: the sender gives up on it (the receiver did
    // get it) and delivers again, with the same delivery id.
    let receiver = Receiver::start(|n| {
        (
            if n == 0 {
                Duration::from_millis(1500)
            } else {
                Duration::ZERO
            },
            200,
        )
    })
    .await;
    let app = spawn_app_config("webhooks_dedupe", |c| {
        quick(c);
        c.webhooks.timeout = Duration::from_millis(500);
        c.webhooks.secret = Some(SECRET.into());
    })
    .await;
    let url = receiver.url("/dedupe");
    completed_job(&app, &url).await;
    let d = delivery_where(&app, &url, |d| d["status"] == "delivered").await;
    assert_eq!(d["attempts"], 2);
    assert!(d["attempt_history"][0]["error"]
        .as_str()
        .unwrap()
        .contains("no answer"));
    let hits = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(hits.len(), 2);
    assert_eq!(
        hits[0].header("x-jobsource-delivery"),
        hits[1].header("x-jobsource-delivery")
    );
    assert_eq!(hits[0].header("x-jobsource-delivery"), d["id"]);
    assert_eq!(hits[0].body, hits[1].body, "same payload on redelivery");
    hits.iter().for_each(check_signature);

    // Replay the enqueue subscriber from the start: the events are handed over again, and
    // nothing new is enqueued or sent.
    let db_url = app.database_url().expect("database").to_owned();
    let pool = sqlx::PgPool::connect(&db_url).await.expect("connect");
    let applied = || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT sum(events)::bigint FROM projection_checkpoints WHERE projection = 'webhooks'",
        )
        .fetch_one(&pool)
        .await
        .expect("checkpoints")
        .unwrap_or(0)
    };
    let before = applied().await;
    assert!(before > 0);
    sqlx::query(
        "UPDATE projection_checkpoints SET log_ms = 0, log_seq = 0 WHERE projection = 'webhooks'",
    )
    .execute(&pool)
    .await
    .expect("reset");
    let deadline = Instant::now() + Duration::from_secs(10);
    while applied().await < 2 * before {
        assert!(Instant::now() < deadline, "the replay never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = deliveries(&app, None).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["status"], "delivered");
    assert_eq!(receiver.hits().len(), 2);
    pool.close().await;
    app.stop().await;
}

#[tokio::test]
async fn embedded_mode_delivers_and_answers_the_endpoints() {
    let healthy = Arc::new(AtomicBool::new(false));
    let up = healthy.clone();
    let receiver = Receiver::start(move |_| {
        (
            Duration::ZERO,
            if up.load(Ordering::SeqCst) { 200 } else { 500 },
        )
    })
    .await;
    let mut config = ServeConfig {
        partitions: 4,
        ..ServeConfig::default()
    };
    quick(&mut config);
    config.webhooks.max_attempts = 2;
    config.webhooks.secret = Some(SECRET.into());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = jobsource_api::serve::Server::start_on(config, listener)
        .await
        .expect("embedded server starts");
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let req = client.post(format!("{base}{path}")).json(&body);
        async move {
            let res = req.send().await.expect("request");
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let get = |path: String| {
        let req = client.get(format!("{base}{path}"));
        async move {
            let res = req.send().await.expect("request");
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let url = receiver.url("/embedded");
    let (status, body) = post(
        "/v1/jobs".into(),
        json!({"type": "upscale", "webhook_url": url}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    post(
        format!("/v1/jobs/{id}/assign"),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    let (status, _) = post(format!("/v1/jobs/{id}/complete"), json!({"result": {}})).await;
    assert_eq!(status, StatusCode::OK);

    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let (status, page) = get("/v1/webhooks/deliveries?status=dead".into()).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if let Some(d) = page["items"].as_array().and_then(|i| i.first()) {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead["attempts"], 2);
    assert_eq!(dead["payload"]["job_id"], id.as_str());
    let did = dead["id"].as_str().unwrap().to_owned();
    healthy.store(true, Ordering::SeqCst);
    let (status, body) = post(format!("/v1/webhooks/deliveries/{did}/retry"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, d) = get(format!("/v1/webhooks/deliveries/{did}")).await;
        if d["status"] == "delivered" {
            assert_eq!(d["attempts"], 3);
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.header("x-jobsource-delivery") == did));
    hits.iter().for_each(check_signature);
    // The embedded enqueuer plans the same superset body.
    let body = hits[2].json();
    assert_eq!(body["event_type"], "job_completed");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["job_id"], id.as_str());
    assert_eq!(body["metadata"]["worker_id"], "w");
    assert_eq!(body["metadata"]["machine_id"], "m");
    assert_iso(&body["completed_at"]);
    let (_, projections) = get("/v1/projections".into()).await;
    assert!(projections["projections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["projection"] == "webhooks"));
    let (_, doc) = get("/openapi.json".into()).await;
    for path in [
        "/v1/webhooks/deliveries",
        "/v1/webhooks/deliveries/{id}",
        "/v1/webhooks/deliveries/{id}/retry",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }
    assert!(doc["components"]["schemas"]["Delivery"].is_object());
    server.shutdown().await;
}

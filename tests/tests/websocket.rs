//! `/ws` on a running server: subscribed events in order, the monitor default, workflow and
//! machine subscriptions, malformed messages (on a full server: Redis and PostgreSQL), and
//! the connection management (slow clients, unanswered pings, shutdown, API keys) on
//! embedded servers, whose limits the tests shrink.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jobsource_api::serve::{ServeConfig, Server};
use jobsource_app::live::{LiveConfig, LiveFeed};
use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, MemoryStore, NewEvent, StoreConfig,
};
use jobsource_http::HttpConfig;
use jobsource_tests::{spawn_app, TestApp};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Ws<S = tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> =
    tokio_tungstenite::WebSocketStream<S>;

fn ws_url(base: &str) -> String {
    format!("{}/ws", base.replace("http://", "ws://"))
}

async fn connect(base: &str) -> Ws {
    tokio_tungstenite::connect_async(ws_url(base))
        .await
        .expect("ws connects")
        .0
}

async fn send<S>(ws: &mut Ws<S>, v: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON text message (pings are answered by the library while reading).
async fn next<S>(ws: &mut Ws<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("stream open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// Messages until one of type `last` arrives (inclusive).
async fn until(ws: &mut Ws, last: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let m = next(ws).await;
        let done = m["type"] == last;
        out.push(m);
        if done {
            return out;
        }
    }
}

fn types(msgs: &[Value]) -> Vec<&str> {
    msgs.iter().map(|m| m["type"].as_str().unwrap()).collect()
}

/// Subscribes and waits for the ack; events that arrive before it (a client without job
/// subscriptions gets every job event) are skipped.
async fn subscribe(ws: &mut Ws, kind: &str, field: &str, id: &str) {
    send(ws, json!({"type": kind, field: id})).await;
    loop {
        let m = next(ws).await;
        if m["type"] == "subscribed" {
            assert_eq!(m, json!({"type": "subscribed", field: id}), "{kind}");
            return;
        }
        assert!(m["data"]["stream"].is_string(), "an event, not {m}");
    }
}

/// Assign, progress and complete `job` on machine `machine`.
async fn drive(app: &TestApp, job: &str, machine: &str) {
    for (path, body) in [
        ("assign", json!({"worker_id": "w", "machine_id": machine})),
        ("progress", json!({"progress": 30})),
        ("complete", json!({"result": {}})),
    ] {
        let a = app.post(&format!("/v1/jobs/{job}/{path}"), body).await;
        assert!(a.status.is_success(), "{path}: {} {}", a.status, a.body);
    }
}

#[tokio::test]
async fn a_job_subscriber_gets_exactly_that_jobs_events_in_order() {
    let app = spawn_app("ws_subscribe").await;
    let a = app.submit(json!({"type": "upscale"})).await;
    let b = app.submit(json!({"type": "upscale"})).await;
    let mut one = connect(&app.base).await;
    subscribe(&mut one, "subscribe_job", "job_id", &a).await;
    // b's events come first: none may reach `one`.
    drive(&app, &b, "m").await;
    drive(&app, &a, "m").await;
    let mut got = until(&mut one, "job_completed").await;
    // The feed is the live tail: `a`'s submission, appended before the subscription, still
    // arrives when the tail had not passed it yet (a loaded machine). It is `a`'s own event.
    if got.first().is_some_and(|m| m["type"] == "job_submitted") {
        assert_eq!(got[0]["job_id"], a.as_str());
        got.remove(0);
    }
    assert_eq!(
        types(&got),
        ["job_assigned", "job_progress", "job_completed"]
    );
    assert!(got.iter().all(|m| m["job_id"] == a.as_str()), "{got:?}");
    // The seed's message shape: type, timestamp (ms), job_id, data = the envelope.
    let first = got[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "job_id", "timestamp", "type"]);
    assert_eq!(got[0]["data"]["stream"], format!("job-{a}"));
    assert_eq!(got[0]["data"]["type"], "job_assigned");
    assert_eq!(got[0]["data"]["data"]["machine_id"], "m");
    assert_eq!(got[0]["data"]["version"], 2);
    assert!(got[0]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);

    // After unsubscribing from its only job, the client is a monitor again.
    send(&mut one, json!({"type": "unsubscribe_job", "job_id": a})).await;
    assert_eq!(
        next(&mut one).await,
        json!({"type": "unsubscribed", "job_id": a})
    );
    let c = app.submit(json!({"type": "upscale"})).await;
    let m = next(&mut one).await;
    assert_eq!(
        (m["type"].as_str(), m["job_id"].as_str()),
        (Some("job_submitted"), Some(c.as_str()))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_without_subscriptions_gets_every_job_event() {
    let app = spawn_app("ws_monitor").await;
    let mut monitor = connect(&app.base).await;
    let a = app.submit(json!({"type": "upscale"})).await;
    let b = app.submit(json!({"type": "upscale"})).await;
    drive(&app, &a, "m").await;
    drive(&app, &b, "m").await;
    let mut seen: Vec<(String, String)> = Vec::new();
    while seen.len() < 8 {
        let m = next(&mut monitor).await;
        seen.push((
            m["job_id"].as_str().unwrap().to_owned(),
            m["type"].as_str().unwrap().to_owned(),
        ));
    }
    for job in [&a, &b] {
        let of_job: Vec<&str> = seen
            .iter()
            .filter(|(j, _)| j == job)
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(
            of_job,
            [
                "job_submitted",
                "job_assigned",
                "job_progress",
                "job_completed"
            ],
            "{seen:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn workflow_and_machine_subscriptions() {
    let app = spawn_app("ws_workflow").await;
    let mut client = connect(&app.base).await;
    let w = app
        .post(
            "/v1/workflows",
            json!({"name": "w", "steps": [{"type": "upscale"}]}),
        )
        .await;
    assert!(w.status.is_success(), "{}", w.body);
    let wf = w.str("workflow_id");
    let job = w.body["job_ids"][0].as_str().unwrap().to_owned();
    // A job subscription to something else: this client is no monitor.
    let elsewhere = app.submit(json!({"type": "upscale"})).await;
    subscribe(&mut client, "subscribe_job", "job_id", &elsewhere).await;
    subscribe(&mut client, "subscribe_workflow", "workflow_id", &wf).await;
    subscribe(&mut client, "subscribe_machine", "machine_id", "gpu-7").await;
    let other = app.submit(json!({"type": "upscale"})).await;
    drive(&app, &other, "gpu-1").await;
    drive(&app, &job, "gpu-7").await;
    let got = until(&mut client, "workflow_completed").await;
    let jobs: Vec<&Value> = got.iter().filter(|m| m.get("job_id").is_some()).collect();
    let flows: Vec<&Value> = got
        .iter()
        .filter(|m| m.get("workflow_id").is_some())
        .collect();
    // The machine subscription: the step job's events from its assignment on, not the
    // other machine's job.
    assert_eq!(
        jobs.iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["job_assigned", "job_progress", "job_completed"],
        "{got:?}"
    );
    assert!(jobs
        .iter()
        .all(|m| m["job_id"] == job.as_str() && m["machine_id"] == "gpu-7"));
    // The workflow subscription: its events, in order, ending with completion.
    assert!(flows.iter().all(|m| m["workflow_id"] == wf.as_str()));
    let flow_types: Vec<&str> = flows.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(
        flow_types.contains(&"workflow_step_completed"),
        "{flow_types:?}"
    );
    assert_eq!(flow_types.last(), Some(&"workflow_completed"));
    app.stop().await;
}

#[tokio::test]
async fn malformed_messages_get_an_error_and_nothing_else_breaks() {
    let app = spawn_app("ws_malformed").await;
    let mut bad = connect(&app.base).await;
    let mut good = connect(&app.base).await;
    for message in [
        Message::Text("{nope".into()),
        Message::Text(r#"{"type":"dance"}"#.into()),
        Message::Text(r#"{"type":"subscribe_job"}"#.into()),
        Message::Text(r#"{"type":"subscribe_workflow","workflow_id":7}"#.into()),
        Message::Binary(vec![1u8, 2, 3].into()),
    ] {
        bad.send(message.clone()).await.unwrap();
        let reply = next(&mut bad).await;
        assert_eq!(reply["type"], "error", "{message:?}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Both connections still work.
    let job = app.submit(json!({"type": "upscale"})).await;
    for ws in [&mut bad, &mut good] {
        let m = next(ws).await;
        assert_eq!(m["type"], "job_submitted");
        assert_eq!(m["job_id"], job.as_str());
    }
    subscribe(&mut bad, "subscribe_job", "job_id", &job).await;
    app.stop().await;
}

/// An embedded server (in-memory store and read models) with these WebSocket limits.
async fn embedded(live: LiveConfig, http: HttpConfig) -> (Server, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ServeConfig {
        partitions: 4,
        http,
        live,
        ..ServeConfig::default()
    };
    let server = Server::start_on(config, listener)
        .await
        .expect("server starts");
    let base = format!("http://{}", server.addr);
    (server, base)
}

/// How a client's stream ended: the close frame's code, or `None` for a dropped
/// connection. Panics when it does not end within `within`.
async fn ending<S>(ws: &mut Ws<S>, within: Duration) -> (usize, Option<CloseCode>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut texts = 0;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server ended the connection in time")
        {
            Some(Ok(Message::Text(_))) => texts += 1,
            Some(Ok(Message::Close(frame))) => return (texts, frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (texts, None),
        }
    }
}

#[tokio::test]
async fn a_slow_client_is_closed_and_never_slows_the_others() {
    let live = LiveConfig {
        buffer: 8,
        ..LiveConfig::default()
    };
    let (server, base) = embedded(live, HttpConfig::default()).await;
    // The slow client never reads; a small receive buffer makes its socket fill quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.addr;
    let stream = socket.connect(addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(ws_url(&base), stream)
        .await
        .expect("ws connects");
    let mut fast = connect(&base).await;
    let jobs = 150;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < jobs {
            let m = next(&mut fast).await;
            assert_eq!(m["type"], "job_submitted");
            got += 1;
        }
        got
    });
    // ~64 KB per event: far more than the socket buffers hold.
    let prompt = "x".repeat(64 * 1024);
    let client = reqwest::Client::new();
    for _ in 0..jobs {
        let r = client
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"type": "upscale", "prompt": prompt}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("the fast client got everything")
            .unwrap(),
        jobs
    );
    // The slow one overflowed its bounded buffer and was closed (1008, or dropped when
    // even the close frame could not get through) before it saw everything.
    let (seen, code) = ending(&mut slow, Duration::from_secs(20)).await;
    assert!(seen < jobs, "the slow client saw all {seen} events");
    assert!(
        code.is_none() || code == Some(CloseCode::Policy),
        "{code:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_lagging_feed_receiver_is_told_so() {
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let feed = LiveFeed::new(8);
    let mut fast = feed.subscribe();
    let mut slow = feed.subscribe();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(feed.clone().run(store.clone() as Arc<dyn EventStore>, rx));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 100 {
            fast.recv().await.expect("the fast receiver keeps up");
            n += 1;
        }
        n
    });
    for i in 0..100u64 {
        store
            .append(AppendRequest::new(
                format!("job-{}", uuid::Uuid::now_v7()),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("job_progress", 1, json!({"i": i}))],
            ))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap(),
        100
    );
    // The slow one (never read) overflowed: its handler closes such a client (1008).
    assert!(matches!(
        slow.recv().await,
        Err(tokio::sync::broadcast::error::RecvError::Lagged(_))
    ));
}

#[tokio::test]
async fn pings_keep_answering_clients_and_drop_silent_ones() {
    let live = LiveConfig {
        ping_every: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(300),
        ..LiveConfig::default()
    };
    let (server, base) = embedded(live, HttpConfig::default()).await;
    let mut silent = connect(&base).await;
    let mut answering = connect(&base).await;
    // Reading answers pings; count them for a while.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(m) = tokio::time::timeout_at(deadline, answering.next()).await {
        match m {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 5, "{pings} pings");
    // The silent client never read, so never answered: it was dropped (no close frame).
    let (_, code) = ending(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(code, None);
    // The answering one still gets events.
    let job = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"type": "upscale"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(next(&mut answering).await["job_id"], job.as_str());
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_going_away() {
    let (server, base) = embedded(LiveConfig::default(), HttpConfig::default()).await;
    let mut ws = connect(&base).await;
    server.shutdown().await;
    let (_, code) = ending(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, Some(CloseCode::Away));
}

#[tokio::test]
async fn the_upgrade_needs_an_api_key_when_keys_are_set() {
    let http = HttpConfig {
        api_keys: vec!["sekrit".into()],
        ..HttpConfig::default()
    };
    let (server, base) = embedded(LiveConfig::default(), http).await;
    match tokio_tungstenite::connect_async(ws_url(&base)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let mut ws = tokio_tungstenite::connect_async(format!("{}?api_key=sekrit", ws_url(&base)))
        .await
        .expect("a key in the query string is accepted")
        .0;
    send(
        &mut ws,
        json!({"type": "subscribe_machine", "machine_id": "m"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    server.shutdown().await;
}

//! `/ws` on a live server (real Redis and PostgreSQL): subscribed events in order, the
//! monitor default, workflow subscriptions, malformed messages, and a slow client closed
//! without holding up a fast one.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jobsource_api::live::LiveFeed;
use jobsource_eventstore::{EventStore, MemoryStore, NewEvent, StoreConfig};
use jobsource_tests::{spawn_app, TestApp};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp) -> Ws {
    let url = format!("{}/ws", app.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connects")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON text message (pings are answered by the library).
async fn next(ws: &mut Ws) -> Value {
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

#[tokio::test]
async fn subscribers_get_exactly_their_events_in_order() {
    let app = spawn_app("ws_subscribe").await;
    let a = app.submit(json!({"type": "upscale"})).await;
    let b = app.submit(json!({"type": "upscale"})).await;
    let mut one = connect(&app).await;
    let mut monitor = connect(&app).await;
    send(&mut one, json!({"type": "subscribe_job", "job_id": a})).await;
    assert_eq!(
        next(&mut one).await,
        json!({"type": "subscribed", "job_id": a})
    );
    // Malformed messages get an error reply; the connection keeps working.
    one.send(Message::Text("{nope".into())).await.unwrap();
    assert_eq!(next(&mut one).await["type"], "error");
    send(&mut one, json!({"type": "subscribe_job"})).await;
    assert_eq!(next(&mut one).await["type"], "error");
    // Drive both jobs; `one` sees only a's events, in order; the monitor sees both.
    for id in [&b, &a] {
        app.post(
            &format!("/v1/jobs/{id}/assign"),
            json!({"worker_id": "w", "machine_id": "m"}),
        )
        .await;
        app.post(&format!("/v1/jobs/{id}/progress"), json!({"progress": 30}))
            .await;
        app.post(&format!("/v1/jobs/{id}/complete"), json!({"result": {}}))
            .await;
    }
    let got = until(&mut one, "job_completed").await;
    let types: Vec<&str> = got.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["job_assigned", "job_progress", "job_completed"]);
    assert!(got.iter().all(|m| m["job_id"] == a.as_str()), "{got:?}");
    assert_eq!(got[0]["data"]["stream"], format!("job-{a}"));
    assert!(got[0]["timestamp"].as_i64().unwrap() > 0);
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let m = next(&mut monitor).await;
        seen.push((
            m["job_id"].as_str().unwrap().to_owned(),
            m["type"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(seen.iter().filter(|(j, _)| *j == a).count(), 3);
    assert_eq!(seen.iter().filter(|(j, _)| *j == b).count(), 3);

    // A workflow subscription receives that workflow's events.
    let w = app
        .post(
            "/v1/workflows",
            json!({"name": "w", "steps": [{"type": "upscale"}]}),
        )
        .await;
    let wf = w.str("workflow_id");
    let job = w.body["job_ids"][0].as_str().unwrap().to_owned();
    send(
        &mut one,
        json!({"type": "subscribe_workflow", "workflow_id": wf}),
    )
    .await;
    assert_eq!(next(&mut one).await["type"], "subscribed");
    app.post(
        &format!("/v1/jobs/{job}/assign"),
        json!({"worker_id": "w", "machine_id": "m"}),
    )
    .await;
    app.post(&format!("/v1/jobs/{job}/complete"), json!({"result": {}}))
        .await;
    let got = until(&mut one, "workflow_completed").await;
    assert!(
        got.iter().all(|m| m["workflow_id"] == wf.as_str()),
        "{got:?}"
    );
    assert!(got.iter().any(|m| m["type"] == "workflow_step_completed"));
    app.stop().await;
}

#[tokio::test]
async fn a_slow_client_is_closed_and_never_slows_the_others() {
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
            fast.recv().await.expect("the fast client keeps up");
            n += 1;
        }
        n
    });
    for i in 0..100u64 {
        store
            .append(jobsource_eventstore::AppendRequest::new(
                format!("job-{}", uuid::Uuid::now_v7()),
                jobsource_eventstore::ExpectedVersion::NoStream,
                vec![NewEvent::new("job_submitted", 2, json!({"i": i}))],
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
    // The slow one (never read) overflowed its bounded buffer: the server closes such a client.
    assert!(matches!(
        slow.recv().await,
        Err(tokio::sync::broadcast::error::RecvError::Lagged(_))
    ));
}

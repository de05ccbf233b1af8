//! Every consumer on the subscriber runtime, on real Redis and PostgreSQL: an undecodable
//! entry in one partition's log stalls exactly that partition of every consumer (archive,
//! postgres, redis, webhooks, orchestrator, seed_bus) with the error and position visible
//! on `GET /v1/projections`; once the entry is gone, `POST /v1/projections/{name}/resume`
//! gets each going again and nothing is skipped; a consumer whose task ended shows
//! `stopped`.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobsource_eventstore::{AppendRequest, EventStore, ExpectedVersion, NewEvent};
use jobsource_tests::app::spawn_app_config;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONSUMERS: [&str; 6] = [
    "archive",
    "orchestrator",
    "postgres",
    "redis",
    "seed_bus",
    "webhooks",
];

fn rows(body: &Value) -> Vec<Value> {
    body["projections"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_entry_stalls_its_partition_of_every_consumer_until_resumed() {
    let app = spawn_app_config("consumers_poison", |c| {
        c.seed_bus = true;
        // The bus's channels and streams under the test's prefix.
        c.read_prefix = Some(c.prefix.clone());
        c.worker.max_attempts = 2;
        c.worker.backoff = Duration::from_millis(10);
    })
    .await;
    let store = app.connect_store().await;
    let first = app.submit(json!({"type": "t"})).await;
    app.eventually("/v1/projections", |b| {
        let rows = rows(b);
        CONSUMERS
            .iter()
            .all(|c| rows.iter().any(|r| r["projection"] == *c))
            && rows
                .iter()
                .all(|r| r["lag"] == 0 && r["state"] == "running")
    })
    .await;

    // Good events right before the poison in partition 1: every consumer applies them
    // and stops exactly at the poison, not a batch early.
    let poisoned = 1u32;
    let mut last_good = String::new();
    let mut appended = 0;
    while appended < 3 {
        let stream = format!("note-{}", uuid::Uuid::now_v7());
        if store.partition_of(&stream) != poisoned {
            continue;
        }
        // An event of a stream no read model keeps (the archive and the bus still see it).
        let r = store
            .append(AppendRequest::new(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new(
                    "note_added",
                    1,
                    json!({"text": "before the poison"}),
                )],
            ))
            .await
            .unwrap();
        last_good = r.last_position().unwrap().to_string();
        appended += 1;
    }
    // The poison: an entry no consumer can decode.
    let bad_id = jobsource_tests::corrupt_log_entry(&store, poisoned)
        .await
        .unwrap();
    let mut conn = store.connection();
    let bad_position = format!("{poisoned}@{bad_id}");
    // Work after it, in every partition.
    let mut later = Vec::new();
    for _ in 0..12 {
        later.push(app.submit(json!({"type": "t"})).await);
    }

    let body = app
        .eventually("/v1/projections", |b| {
            let rows = rows(b);
            CONSUMERS.iter().all(|c| {
                rows.iter().any(|r| {
                    r["projection"] == *c && r["partition"] == poisoned && r["state"] == "stalled"
                })
            })
        })
        .await;
    for r in rows(&body) {
        let name = r["projection"].as_str().unwrap();
        if r["partition"] == poisoned {
            assert_eq!(r["state"], "stalled", "{r}");
            let error = r["last_error"].as_str().unwrap_or_default();
            assert!(error.contains(&bad_position), "{name}: {error}");
            assert!(r["lag"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(
                r["checkpoint"], last_good,
                "{name} stops right at the poison"
            );
        } else {
            assert_eq!(r["state"], "running", "{r}");
        }
    }
    // The other partitions kept going: their later jobs are visible.
    let other = later
        .iter()
        .find(|id| store.partition_of(&format!("job-{id}")) != poisoned)
        .expect("a job in another partition");
    app.eventually(&format!("/v1/jobs/{other}"), |b| b["status"] == "pending")
        .await;

    // Unknown names are refused, naming the field.
    let unknown = app.post("/v1/projections/nope/resume", json!({})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    assert_eq!(
        unknown.body["error"]["details"][0]["field"], "name",
        "{}",
        unknown.body
    );

    // Fix the cause, resume each consumer: all run again and catch up.
    let _: u64 = redis::cmd("XDEL")
        .arg(store.keys().log(poisoned))
        .arg(&bad_id)
        .query_async(&mut conn)
        .await
        .unwrap();
    for name in CONSUMERS {
        let a = app
            .post(&format!("/v1/projections/{name}/resume"), json!({}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{name}: {}", a.body);
        assert_eq!(a.body["resumed_partitions"], 1, "{name}: {}", a.body);
    }
    app.eventually("/v1/projections", |b| {
        rows(b)
            .iter()
            .all(|r| r["state"] == "running" && r["lag"] == 0)
    })
    .await;
    for id in later.iter().chain([&first]) {
        app.eventually(&format!("/v1/jobs/{id}"), |b| b["status"] == "pending")
            .await;
    }
    // Nothing skipped, nothing twice: the archive holds every event exactly once.
    let pool = sqlx::PgPool::connect(app.database_url().unwrap())
        .await
        .unwrap();
    let (archived, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(archived, 16);
    assert_eq!(distinct, 16);
    // The seed bus republished every job_submitted once after the resume.
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(format!("{}:stream:job_submitted", app.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let published: std::collections::HashSet<String> = entries
        .into_iter()
        .filter_map(|(_, fields)| {
            let i = fields.iter().position(|f| f == "event_id")?;
            fields.get(i + 1).cloned()
        })
        .collect();
    assert_eq!(published.len(), 13, "every job_submitted republished");
    pool.close().await;

    // A consumer whose task ended shows `stopped`; the others keep running.
    let consumers = app.consumers().expect("a registry");
    consumers.get("webhooks").expect("webhooks").stop();
    let body = app
        .eventually("/v1/projections", |b| {
            rows(b)
                .iter()
                .filter(|r| r["projection"] == "webhooks")
                .all(|r| r["state"] == "stopped")
        })
        .await;
    assert!(rows(&body)
        .iter()
        .filter(|r| r["projection"] != "webhooks")
        .all(|r| r["state"] == "running"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_consumers_stall_on_a_poison_event_and_never_skip_it() {
    use jobsource_api::serve::{ServeConfig, Server};
    use jobsource_eventstore::{AppendRequest, ExpectedVersion, NewEvent};

    let mut config = ServeConfig {
        partitions: 4,
        ..ServeConfig::default()
    };
    config.worker.max_attempts = 2;
    config.worker.backoff = Duration::from_millis(5);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::start_on(config, listener).await.expect("server");
    let store = server.state.service().store().clone();
    // A job_completed whose payload is not one: no consumer can decode it.
    let stream = format!("job-{}", uuid::Uuid::now_v7());
    let appended = store
        .append(AppendRequest::new(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("job_completed", 1, json!({"nonsense": true}))],
        ))
        .await
        .expect("append");
    let position = appended.last_position().expect("position");
    let stalled = |rows: &[jobsource_app::read::ProjectionStatus], name: &str| {
        rows.iter().any(|r| {
            r.projection == name
                && r.partition == position.partition
                && r.state == "stalled"
                && r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains(&position.to_string()))
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = server.state.projection_status().await.expect("status");
        if ["memory", "webhooks", "orchestrator"]
            .iter()
            .all(|n| stalled(&rows, n))
        {
            assert!(rows
                .iter()
                .filter(|r| r.partition != position.partition)
                .all(|r| r.state == "running"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never stalled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Resume with the cause still there: it stalls again on the same event.
    let consumers = server.state.consumers().expect("registry").clone();
    assert_eq!(consumers.resume("memory").await.expect("resume"), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = server.state.projection_status().await.expect("status");
        if stalled(&rows, "memory") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_progress_shows_on_the_api_while_it_runs() {
    let app = spawn_app_config("consumers_rebuild_progress", |_| {}).await;
    let store = app.connect_store().await;
    // Enough history that the rebuild takes a while.
    let total = 20_000;
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = app.connect_store().await;
        writers.push(tokio::spawn(async move {
            for i in 0..total / 8 {
                let stream = format!("note-{w}-{i}-{}", uuid::Uuid::now_v7());
                store
                    .append(AppendRequest::new(
                        &stream,
                        ExpectedVersion::NoStream,
                        vec![NewEvent::new("note_added", 1, json!({"i": i}))],
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    drop(store);
    app.eventually("/v1/projections", |b| {
        rows(b)
            .iter()
            .filter(|r| r["projection"] == "archive")
            .all(|r| r["lag"] == 0)
    })
    .await;

    let a = app.post("/v1/projections/archive/rebuild", json!({})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let mut seen = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body = app.get("/v1/projections").await.body;
        let archive: Vec<Value> = rows(&body)
            .into_iter()
            .filter(|r| r["projection"] == "archive")
            .collect();
        if let Some(r) = archive.iter().find(|r| r["state"] == "rebuilding") {
            // The latest row that carries a total (the first report may not be in yet).
            if seen.is_none() || !r["events_total"].is_null() {
                seen = Some(r.clone());
            }
        } else if seen.is_some() {
            // Swapped in: the progress fields are gone, the rows run again.
            assert!(archive
                .iter()
                .all(|r| r["state"] == "running" && r.get("events_done").is_none()));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = seen.expect("a rebuilding row");
    let done = r["events_done"].as_u64().expect("events_done");
    let all = r["events_total"].as_u64().expect("events_total");
    assert!(done <= all && all >= total as u64, "{r}");
    assert!(r["events_per_sec"].as_f64().is_some(), "{r}");
    assert!(r.get("eta_seconds").is_some(), "{r}");
    app.stop().await;
}

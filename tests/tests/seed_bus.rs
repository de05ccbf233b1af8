//! The seed message bus bridge on real Redis: a job submitted over HTTP comes out on the
//! seed's pub/sub channels and stream in the seed's shape, and a bridge restarted on the
//! same prefix continues from its checkpoints instead of republishing everything.
//!
//! The tests namespace the channels and streams with their unique prefix (the app via
//! `read_prefix`, the subscriber via `SeedBusConfig::namespace`), so they never touch the
//! shared bare `events:*` / `stream:<type>` names and the prefix cleanup removes them.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jobsource_app::seed_bus::{SeedBus, SeedBusConfig};
use jobsource_app::service::{CommandContext, Service};
use jobsource_domain::job::SubmitJob;
use jobsource_domain::workflow::{CreateWorkflow, StepSpec};
use jobsource_eventstore::{EventStore, LogId, RedisStore, StoreConfig};
use jobsource_tests::app::spawn_app_config;
use jobsource_tests::{cleanup_prefix, redis_connection, redis_url, unique_prefix};
use redis::streams::StreamRangeReply;
use serde_json::{json, Value};
use uuid::Uuid;

async fn xrange(prefix: &str, event_type: &str) -> StreamRangeReply {
    let mut conn = redis_connection(&redis_url()).await.expect("redis");
    redis::cmd("XRANGE")
        .arg(format!("{prefix}:stream:{event_type}"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange")
}

#[tokio::test]
async fn seed_bus_publishes_submitted_job_in_seed_shape() {
    let app = spawn_app_config("seed_bus_e2e", |c| {
        c.seed_bus = true;
        c.seed_bus_maxlen = 1000;
        c.read_prefix = Some(c.prefix.clone());
    })
    .await;
    let prefix = app.prefix.clone();
    let client = redis::Client::open(redis_url()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    let typed = format!("{prefix}:events:job_submitted");
    let all = format!("{prefix}:events:*");
    pubsub.subscribe(&typed).await.expect("subscribe typed");
    pubsub.subscribe(&all).await.expect("subscribe all");

    let id = app
        .submit(
            json!({"type": "seed-bus-render", "prompt": "a cat", "priority": 70,
                       "parameters": {"steps": 20}}),
        )
        .await;

    let mut seen_typed = None;
    let mut seen_all = None;
    {
        let mut messages = pubsub.on_message();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen_typed.is_none() || seen_all.is_none() {
            let msg = tokio::time::timeout_at(deadline, messages.next())
                .await
                .expect("both messages within 10 s")
                .expect("pubsub open");
            let body: Value =
                serde_json::from_str(&msg.get_payload::<String>().expect("payload")).expect("json");
            if body["type"] != "job_submitted" {
                continue;
            }
            if msg.get_channel_name() == typed {
                seen_typed = Some(body);
            } else if msg.get_channel_name() == all {
                seen_all = Some(body);
            }
        }
    }
    let m = seen_typed.expect("typed message");
    assert_eq!(Some(&m), seen_all.as_ref(), "same message on both channels");
    assert_eq!(m["job_id"], json!(id));
    assert_eq!(m["job_type"], "seed-bus-render");
    assert_eq!(
        m["payload"],
        json!({"type": "seed-bus-render", "prompt": "a cat", "parameters": {"steps": 20}})
    );
    assert_eq!(m["priority"], 70);
    assert_eq!(m["version"], 1);
    assert!(m["timestamp"].as_i64().is_some_and(|t| t > 0), "{m}");
    assert!(m["correlation_id"].is_string(), "{m}");
    assert!(m["id"].is_string(), "{m}");
    assert!(m["requirements"].is_object(), "{m}");
    assert!(m["metadata"]["jobsource"]["position"].is_string(), "{m}");

    let entries = xrange(&prefix, "job_submitted").await;
    assert_eq!(entries.ids.len(), 1, "{entries:?}");
    let entry = &entries.ids[0];
    let field = |k: &str| -> String { entry.get(k).unwrap_or_else(|| panic!("no {k}")) };
    assert_eq!(field("event_id"), m["id"].as_str().expect("id"));
    assert_eq!(field("event_type"), "job_submitted");
    assert_eq!(field("timestamp"), m["timestamp"].to_string());
    let data: Value = serde_json::from_str(&field("data")).expect("data json");
    assert_eq!(data, m);
    assert_eq!(entry.map.len(), 4, "{:?}", entry.map);

    let projections = app.get("/v1/projections").await;
    let rows: Vec<&Value> = projections.body["projections"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["projection"] == "seed_bus")
        .collect();
    assert_eq!(rows.len(), 4, "{}", projections.body);
    drop(pubsub);
    app.stop().await;
}

#[tokio::test]
async fn seed_bus_restart_continues_from_checkpoint() {
    let url = redis_url();
    let prefix = unique_prefix("seed_bus_restart");
    let store = RedisStore::connect(
        &url,
        StoreConfig {
            prefix: prefix.clone(),
            partitions: 4,
            ..StoreConfig::default()
        },
    )
    .await
    .expect("connect");
    let conn = store.connection();
    let store: Arc<dyn EventStore> = Arc::new(store);
    let service = Service::new(store.clone(), None);
    let ctx = CommandContext::new();
    let config = SeedBusConfig {
        maxlen: 1000,
        namespace: prefix.clone(),
        batch: 2,
        ..SeedBusConfig::default()
    };
    let step = || StepSpec {
        job_type: "seed-bus-step".into(),
        prompt: None,
        parameters: None,
        depends_on: Vec::new(),
    };
    service
        .create_workflow(
            CreateWorkflow {
                workflow_id: Uuid::nil(),
                job_ids: Vec::new(),
                name: "two".into(),
                description: None,
                steps: vec![step(), step()],
                webhook_url: None,
            },
            &ctx,
        )
        .await
        .expect("create workflow");
    let mut total = 0;
    for p in 0..store.partitions() {
        total += store.partition_len(p).await.expect("len") as usize;
    }

    let first = SeedBus::new(store.clone(), conn.clone(), &prefix, config.clone());
    assert_eq!(first.catch_up().await.expect("first run"), total);
    assert_eq!(first.catch_up().await.expect("caught up"), 0);
    assert_eq!(xrange(&prefix, "workflow_created").await.ids.len(), 1);
    assert_eq!(xrange(&prefix, "job_submitted").await.ids.len(), 2);
    drop(first);

    // A new bridge on the same prefix: nothing again, then only the new event.
    let second = SeedBus::new(store.clone(), conn.clone(), &prefix, config.clone());
    assert_eq!(second.catch_up().await.expect("restart"), 0);
    service
        .submit_job(
            SubmitJob {
                job_type: "seed-bus-single".into(),
                ..SubmitJob::default()
            },
            &ctx,
        )
        .await
        .expect("submit");
    assert_eq!(second.catch_up().await.expect("one more"), 1);
    let submitted = xrange(&prefix, "job_submitted").await;
    assert_eq!(submitted.ids.len(), 3);

    // Moving the checkpoints back republishes (at least once); event_id tells duplicates.
    for p in 0..store.partitions() {
        second.set_checkpoint(p, LogId::ZERO).await.expect("rewind");
    }
    assert_eq!(second.catch_up().await.expect("replay"), total + 1);
    let replayed = xrange(&prefix, "job_submitted").await;
    assert_eq!(replayed.ids.len(), 6);
    let distinct: HashSet<String> = replayed
        .ids
        .iter()
        .map(|e| e.get::<String>("event_id").expect("event_id"))
        .collect();
    assert_eq!(distinct.len(), 3);

    let _ = cleanup_prefix(&url, &prefix).await;
}

//! The Redis read model worker follows the live log, and an event it cannot apply stalls
//! only its partition, with the position recorded, while the others keep going.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobsource_domain::job::{JobCommand, SubmitJob};
use jobsource_domain::{job_stream, Aggregate};
use jobsource_eventstore::typed::to_new_event;
use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, MemoryStore, NewEvent, StoreConfig,
};
use jobsource_projections::worker::WorkerConfig;
use jobsource_projections::{redis_worker, RedisReadModel};
use jobsource_tests::{cleanup_prefix, redis_url, unique_prefix};
use redis::AsyncCommands;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

async fn submit(store: &dyn EventStore) -> Uuid {
    let id = Uuid::now_v7();
    let job = jobsource_domain::job::Job::default();
    let events = job
        .decide(&JobCommand::Submit(SubmitJob {
            job_id: id,
            job_type: "render".into(),
            ..Default::default()
        }))
        .unwrap();
    store
        .append(AppendRequest::new(
            job_stream(id),
            ExpectedVersion::Exact(job.version()),
            events.iter().map(to_new_event).collect(),
        ))
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_live_events_and_stalls_only_the_poisoned_partition() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig {
        partitions: 2,
        ..StoreConfig::default()
    }));
    let rm = unique_prefix("rmworker");
    let client = redis::Client::open(redis_url()).unwrap();
    let model = Arc::new(RedisReadModel::new(
        client.get_connection_manager().await.unwrap().into(),
        &rm,
    ));
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(redis_worker::run(
        store.clone(),
        model.clone(),
        WorkerConfig {
            batch: 10,
            max_attempts: 2,
            backoff: Duration::from_millis(10),
        },
        rx,
    ));
    // A job event whose payload is not a job event: the model cannot apply it.
    let poison_stream = format!("job-{}", Uuid::now_v7());
    store
        .append(AppendRequest::new(
            &poison_stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("job_progress", 1, json!({"garbage": true}))],
        ))
        .await
        .unwrap();
    let poisoned = store.partition_of(&poison_stream);
    // Live events on both partitions.
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&*store).await);
    }
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let start = Instant::now();
    let (healthy_ids, _): (Vec<Uuid>, Vec<Uuid>) = ids
        .iter()
        .partition(|id| store.partition_of(&job_stream(**id)) != poisoned);
    loop {
        let mut all = true;
        for id in &healthy_ids {
            let exists: bool = conn.exists(format!("{rm}:job:{id}")).await.unwrap();
            all &= exists;
        }
        let stall = redis_worker::stalled(&model, poisoned).await.unwrap();
        if let (true, Some((position, error))) = (all, stall) {
            assert!(position.starts_with(&format!("{poisoned}@")), "{position}");
            assert!(!error.is_empty());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "worker did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing after the poison event in its partition was skipped past it.
    let checkpoint = model.checkpoint(poisoned).await.unwrap();
    let next = store.read_partition(poisoned, checkpoint, 1).await.unwrap();
    assert_eq!(next[0].envelope.stream, poison_stream);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    cleanup_prefix(&redis_url(), &rm).await.unwrap();
}

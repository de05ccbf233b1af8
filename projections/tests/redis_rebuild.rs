//! Rebuild of the Redis read model (new key generation, atomic swap) while appends
//! continue, and verify (equal after the rebuild, differences reported after tampering).

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use jobsource_domain::job::{AssignJob, CompleteJob, Job, JobCommand, SubmitJob};
use jobsource_domain::job_stream;
use jobsource_eventstore::{EventStore, RedisStore, StoreConfig};
use jobsource_projections::redis::rebuild::{is_rebuilding, rebuild, verify};
use jobsource_projections::RedisReadModel;
use jobsource_tests::{cleanup_prefix, redis_url, run_commands, unique_prefix};
use redis::AsyncCommands;
use uuid::Uuid;

async fn lifecycle(store: &dyn EventStore, steps: usize) -> Uuid {
    let id = Uuid::now_v7();
    let mut commands = vec![JobCommand::Submit(SubmitJob {
        job_id: id,
        job_type: "render".into(),
        priority: (id.as_bytes()[15] % 100),
        ..Default::default()
    })];
    if steps > 1 {
        commands.push(JobCommand::Assign(AssignJob {
            lease_expires_at: None,
            worker_id: "w".into(),
            machine_id: "m".into(),
        }));
    }
    if steps > 2 {
        commands.push(JobCommand::Complete(CompleteJob {
            worker_id: None,
            result: serde_json::json!({"ok": true}),
            duration_ms: None,
        }));
    }
    run_commands::<Job>(store, &job_stream(id), commands).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rebuild_swaps_a_new_generation_in_while_appends_continue() {
    let prefix = unique_prefix("redis_rebuild");
    let store = Arc::new(
        RedisStore::connect(
            &redis_url(),
            StoreConfig {
                prefix: prefix.clone(),
                partitions: 4,
                ..StoreConfig::default()
            },
        )
        .await
        .unwrap(),
    );
    let rm = format!("{prefix}:rm");
    let live = RedisReadModel::new(store.connection(), &rm);
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(lifecycle(&*store, i % 3 + 1).await);
    }
    live.catch_up(&*store, 100).await.unwrap();
    assert!(verify(&*store, store.connection(), &rm, 100, 10)
        .await
        .unwrap()
        .is_empty());

    // Tamper with the live model: verify names the key, a rebuild repairs it.
    let mut conn = store.connection();
    let tampered = live.keys().job(&ids[0].to_string());
    let _: () = conn.hset(&tampered, "status", "bogus").await.unwrap();
    let diffs = verify(&*store, store.connection(), &rm, 100, 10)
        .await
        .unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0].table, tampered);

    // Rebuild while a writer keeps appending and the live worker keeps applying.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                lifecycle(&*store, i % 3 + 1).await;
            }
        })
    };
    let follower = {
        let (store, conn, rm) = (store.clone(), store.connection(), rm.clone());
        tokio::spawn(async move {
            let live = RedisReadModel::new(conn, &rm);
            for _ in 0..20 {
                live.catch_up(&*store, 7).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let seen = std::sync::Mutex::new(0u64);
    let progress = |done: u64, _total: u64| *seen.lock().unwrap() = done;
    let n = rebuild(&*store, store.connection(), &rm, None, 25, &progress)
        .await
        .unwrap();
    assert!(n >= 60 * 2, "replayed {n} events");
    assert!(*seen.lock().unwrap() > 0, "progress reported");
    assert!(
        !is_rebuilding(&store.connection(), &rm).await.unwrap(),
        "shadow swapped away"
    );
    writer.await.unwrap();
    follower.await.unwrap();
    live.catch_up(&*store, 100).await.unwrap();
    let status: String = conn.hget(&tampered, "status").await.unwrap();
    assert_ne!(status, "bogus");
    let diffs = verify(&*store, store.connection(), &rm, 100, 10)
        .await
        .unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
    let pending: usize = conn.zcard(live.keys().key("jobs:pending")).await.unwrap();
    assert!(pending > 0);
    cleanup_prefix(&redis_url(), &prefix).await.unwrap();
}

#[tokio::test]
async fn an_interrupted_redis_rebuild_resumes_from_its_own_checkpoints() {
    let prefix = unique_prefix("redis_rebuild_resume");
    let store = RedisStore::connect(
        &redis_url(),
        StoreConfig {
            prefix: prefix.clone(),
            partitions: 2,
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap();
    let rm = format!("{prefix}:rm");
    for i in 0..50 {
        lifecycle(&store, i % 3 + 1).await;
    }
    // The rebuild dies (a panic stands in for a killed process) after some batches.
    let store = Arc::new(store);
    let crashed = {
        let (store, rm) = (store.clone(), rm.clone());
        tokio::spawn(async move {
            let crash = |done: u64, _: u64| assert!(done < 30, "simulated crash at {done}");
            rebuild(&*store, store.connection(), &rm, None, 3, &crash).await
        })
        .await
    };
    assert!(crashed.is_err(), "the rebuild was interrupted");
    assert!(
        is_rebuilding(&store.connection(), &rm).await.unwrap(),
        "shadow kept"
    );
    let shadow = RedisReadModel::new(
        store.connection(),
        &jobsource_projections::redis::rebuild::shadow_namespace(&rm),
    );
    let mut before = 0;
    for p in 0..2 {
        let cp = shadow.checkpoint(p).await.unwrap();
        before += store
            .read_partition(p, jobsource_eventstore::LogId::ZERO, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.position.id <= cp)
            .count() as u64;
    }
    assert!(before >= 30, "the shadow kept its progress: {before}");
    // Resuming applies only what the shadow had not applied yet.
    let n = rebuild(&*store, store.connection(), &rm, None, 3, &|_, _| {})
        .await
        .unwrap();
    let mut total = 0;
    for p in 0..2 {
        total += store.partition_len(p).await.unwrap();
    }
    assert_eq!(n + before, total, "resumed, not restarted ({before} + {n})");
    assert!(!is_rebuilding(&store.connection(), &rm).await.unwrap());
    assert!(verify(&*store, store.connection(), &rm, 100, 10)
        .await
        .unwrap()
        .is_empty());
    cleanup_prefix(&redis_url(), &prefix).await.unwrap();
}

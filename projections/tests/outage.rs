//! PostgreSQL down for a while, then back: the projector waits (no stall, no exit) and
//! catches up with nothing lost. Uses a private PostgreSQL server, never the shared one.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, MemoryStore, NewEvent, StoreConfig,
};
use jobsource_projections::worker::{self, WorkerConfig};
use jobsource_projections::{migrate, Archive};
use jobsource_tests::PrivatePostgres;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;

async fn append(store: &dyn EventStore, n: u64) {
    for i in 0..n {
        store
            .append(AppendRequest::new(
                format!("job-{}", uuid::Uuid::now_v7()),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("x", 1, json!({"i": i}))],
            ))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_then_recovery_loses_nothing() {
    if !PrivatePostgres::available() {
        eprintln!("skipped: PostgreSQL server binaries not installed");
        return;
    }
    let pg = PrivatePostgres::start();
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&pg.url)
        .await
        .unwrap();
    migrate::migrate(&pool).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig {
        partitions: 2,
        ..StoreConfig::default()
    }));
    append(&*store, 20).await;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(worker::run(
        store.clone(),
        pool.clone(),
        Arc::new(Archive),
        WorkerConfig {
            batch: 5,
            max_attempts: 2,
            backoff: Duration::from_millis(50),
        },
        rx,
    ));
    let count = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
    };
    let wait_for = |n: i64| {
        let pool = pool.clone();
        async move {
            let start = Instant::now();
            loop {
                if matches!(count(pool.clone()).await, Ok(c) if c == n) {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "never reached {n}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(20).await;

    // The database goes away; events keep being appended.
    assert!(pg.stop());
    append(&*store, 30).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !task.is_finished(),
        "the worker must wait out the outage, not exit"
    );

    // Back: everything is applied, nothing stalled.
    assert!(pg.start_again());
    wait_for(50).await;
    let stalled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints WHERE state = 'stalled'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stalled, 0);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    pool.close().await;
}

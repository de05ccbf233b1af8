//! A projector task killed (aborted) in the middle of a batch, then restarted, ends equal to
//! a from-scratch recomputation (`verify`), with every event applied exactly once.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, MemoryStore, NewEvent, RecordedEvent, StoreConfig,
};
use jobsource_projections::rebuild::verify;
use jobsource_projections::worker::{self, WorkerConfig};
use jobsource_projections::{migrate, Archive, PgProjection, ProjectionError};
use jobsource_tests::TestDatabase;
use serde_json::json;
use sqlx::{Postgres, Transaction};
use tokio::sync::watch;

/// The archive, slowed down inside its transaction so an abort lands mid-batch.
struct SlowArchive;

#[async_trait]
impl PgProjection for SlowArchive {
    fn name(&self) -> &str {
        "archive"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        Archive.apply(tx, events).await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_then_restarted_equals_recomputation() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig {
        partitions: 2,
        ..StoreConfig::default()
    }));
    for i in 0..200u64 {
        store
            .append(AppendRequest::new(
                format!("job-{}", i % 17),
                ExpectedVersion::Any,
                vec![NewEvent::new("x", 1, json!({"i": i}))],
            ))
            .await
            .unwrap();
    }
    let db = TestDatabase::create().await;
    let pool = db.pool(4).await.unwrap();
    migrate::migrate(&pool).await.unwrap();
    let config = WorkerConfig {
        batch: 10,
        ..WorkerConfig::default()
    };

    let (_stop, rx) = watch::channel(false);
    let task = tokio::spawn(worker::run(
        store.clone(),
        pool.clone(),
        Arc::new(SlowArchive),
        config.clone(),
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(145)).await;
    task.abort(); // killed, most likely inside a batch's open transaction
    let _ = task.await;
    let partial: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(partial < 200, "the kill should land before the end");
    // Rows and checkpoints agree: the killed batch left neither behind.
    let checkpointed: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(events), 0)::int8 FROM projection_checkpoints WHERE projection = 'archive'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(partial, checkpointed);

    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(worker::run(
        store.clone(),
        pool.clone(),
        Arc::new(Archive),
        config,
        rx,
    ));
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "restart did not catch up: {n} of 200 events archived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let applied: i64 = sqlx::query_scalar(
        "SELECT sum(events)::int8 FROM projection_checkpoints WHERE projection = 'archive'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(applied, 200, "every event applied exactly once");
    let diffs = verify(&*store, &pool, &Archive, 50, 10).await.unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
    pool.close().await;
    db.drop_db().await;
}

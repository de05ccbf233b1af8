//! The archive projection on real PostgreSQL (a fresh database per test) over the Redis
//! event store (a unique prefix per test): catch-up, idempotence under re-delivery, and a
//! batch that fails half-way leaving nothing behind.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use jobsource_eventstore::{
    AppendRequest, Cursor, EventStore, ExpectedVersion, NewEvent, RecordedEvent, RedisStore,
    StoreConfig,
};
use jobsource_projections::{
    catch_up, checkpoint, migrate, Archive, PgProjection, ProjectionError,
};
use jobsource_tests::{cleanup_prefix, redis_url, unique_prefix, TestDatabase};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};

async fn setup(name: &str) -> (Arc<RedisStore>, String, TestDatabase, PgPool) {
    let prefix = unique_prefix(name);
    let store = RedisStore::connect(
        &redis_url(),
        StoreConfig {
            prefix: prefix.clone(),
            partitions: 4,
            ..StoreConfig::default()
        },
    )
    .await
    .expect("redis");
    let db = TestDatabase::create().await;
    let pool = db.pool(4).await.expect("pool");
    migrate::migrate(&pool).await.expect("migrate");
    (Arc::new(store), prefix, db, pool)
}

async fn fill(store: &dyn EventStore, streams: usize, per_stream: u64) {
    for s in 0..streams {
        let stream = format!("job-{}", uuid::Uuid::now_v7());
        for v in 0..per_stream {
            let e = NewEvent::new("job_progress", 1, json!({"s": s, "v": v}))
                .with_correlation(format!("corr-{s}"));
            store
                .append(AppendRequest::new(
                    &stream,
                    ExpectedVersion::Exact(v),
                    vec![e],
                ))
                .await
                .expect("append");
        }
    }
}

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn archive_catches_up_and_redelivery_changes_nothing() {
    let (store, prefix, db, pool) = setup("archive-catchup").await;
    fill(&*store, 12, 5).await;
    assert_eq!(catch_up(&*store, &pool, &Archive, 7).await.unwrap(), 60);
    assert_eq!(count(&pool).await, 60);
    // Caught up: nothing more to do.
    assert_eq!(catch_up(&*store, &pool, &Archive, 7).await.unwrap(), 0);
    // Replay from the start (re-delivery of everything): rows unchanged.
    checkpoint::reset(&pool, "archive", &Cursor::start(store.partitions()))
        .await
        .unwrap();
    assert_eq!(catch_up(&*store, &pool, &Archive, 7).await.unwrap(), 60);
    assert_eq!(count(&pool).await, 60);
    // Rows carry position, version and the envelope; queryable by correlation id.
    let (position, version, corr): (String, i64, String) = sqlx::query_as(
        "SELECT position, version, correlation_id FROM events WHERE correlation_id = 'corr-3' \
         ORDER BY version DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(position.contains('@'));
    assert_eq!((version, corr.as_str()), (5, "corr-3"));
    // New events after catch-up are picked up from the checkpoint.
    fill(&*store, 1, 3).await;
    assert_eq!(catch_up(&*store, &pool, &Archive, 7).await.unwrap(), 3);
    assert_eq!(count(&pool).await, 63);
    pool.close().await;
    db.drop_db().await;
    cleanup_prefix(&redis_url(), &prefix).await.unwrap();
}

/// Writes the archive rows, then fails once before the checkpoint moves: a crash mid-batch.
struct FailsOnce {
    failed: AtomicBool,
}

#[async_trait]
impl PgProjection for FailsOnce {
    fn name(&self) -> &str {
        "archive"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        Archive.apply(tx, events).await?;
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err(ProjectionError::Apply {
                position: events[0].position.to_string(),
                message: "injected failure after writing rows".into(),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_batch_failing_half_way_leaves_nothing_and_is_redone() {
    let (store, prefix, db, pool) = setup("archive-crash").await;
    fill(&*store, 8, 4).await;
    let flaky = FailsOnce {
        failed: AtomicBool::new(false),
    };
    let err = catch_up(&*store, &pool, &flaky, 5).await.unwrap_err();
    assert!(matches!(err, ProjectionError::Apply { .. }));
    // The rows written before the failure were rolled back with the checkpoint.
    assert_eq!(count(&pool).await, 0);
    let moved: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(events), 0)::int8 FROM projection_checkpoints")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(moved, 0);
    // Restarted, it ends equal to a clean run: every event exactly once.
    assert_eq!(catch_up(&*store, &pool, &flaky, 5).await.unwrap(), 32);
    assert_eq!(count(&pool).await, 32);
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT (stream, version)) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(distinct, 32);
    pool.close().await;
    db.drop_db().await;
    cleanup_prefix(&redis_url(), &prefix).await.unwrap();
}

#[tokio::test]
async fn replay_from_a_timestamp_yields_only_later_events() {
    let (store, prefix, db, pool) = setup("archive-from-time").await;
    fill(&*store, 3, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let t = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    fill(&*store, 2, 3).await;
    let cursor = store
        .resolve(&jobsource_eventstore::Offset::Timestamp(t))
        .await
        .unwrap();
    checkpoint::reset(&pool, "archive", &cursor).await.unwrap();
    assert_eq!(catch_up(&*store, &pool, &Archive, 4).await.unwrap(), 6);
    let earliest: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT min(occurred_at) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(earliest >= t - chrono::Duration::milliseconds(1));
    assert_eq!(count(&pool).await, 6);
    pool.close().await;
    db.drop_db().await;
    cleanup_prefix(&redis_url(), &prefix).await.unwrap();
}

//! Rebuild beside the live model while appends continue, resume after a crash, and verify
//! (equal after a rebuild, differences reported after tampering).

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use jobsource_domain::job::{AssignJob, Job, JobCommand, SubmitJob};
use jobsource_domain::job_stream;
use jobsource_eventstore::{EventStore, RecordedEvent, RedisStore, StoreConfig};
use jobsource_projections::rebuild::{rebuild, verify};
use jobsource_projections::{catch_up, migrate, PgProjection, PostgresReadModel, ProjectionError};
use jobsource_tests::{cleanup_prefix, redis_url, run_commands, unique_prefix, TestDatabase};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

async fn job_lifecycle(store: &dyn EventStore, assign: bool) {
    let id = Uuid::now_v7();
    let mut commands = vec![JobCommand::Submit(SubmitJob {
        job_id: id,
        job_type: "render".into(),
        ..Default::default()
    })];
    if assign {
        commands.push(JobCommand::Assign(AssignJob {
            lease_expires_at: None,
            worker_id: "w".into(),
            machine_id: "m".into(),
        }));
    }
    run_commands::<Job>(store, &job_stream(id), commands).await;
}

/// Fails the n-th batch once: a crash in the middle of a rebuild.
struct CrashOnce {
    batches: AtomicUsize,
    crash_at: usize,
}

#[async_trait]
impl PgProjection for CrashOnce {
    fn name(&self) -> &str {
        "postgres"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        if self.batches.fetch_add(1, Ordering::SeqCst) == self.crash_at {
            return Err(ProjectionError::Apply {
                position: events[0].position.to_string(),
                message: "simulated crash".into(),
            });
        }
        PostgresReadModel.apply(tx, events).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_while_appending_resumes_after_a_crash_and_verifies() {
    let prefix = unique_prefix("rebuild");
    let store: Arc<RedisStore> = Arc::new(
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
    let db = TestDatabase::create().await;
    let pool = db.pool(4).await.unwrap();
    migrate::migrate(&pool).await.unwrap();
    for i in 0..40 {
        job_lifecycle(&*store, i % 2 == 0).await;
    }
    catch_up(&*store, &pool, &PostgresReadModel, 50)
        .await
        .unwrap();

    // A rebuild that crashes part-way leaves the live model untouched and serving.
    let crashing = CrashOnce {
        batches: AtomicUsize::new(0),
        crash_at: 3,
    };
    let noop = |_: u64, _: u64| {};
    assert!(rebuild(&*store, &pool, &crashing, None, 5, &noop)
        .await
        .is_err());
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(live, 40);

    // Started again (resuming), with appends going on meanwhile.
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                job_lifecycle(&*store, i % 3 == 0).await;
            }
        })
    };
    // While unfinished, the shadow's partitions show as `rebuilding`.
    let rebuilding: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_checkpoints \
         WHERE projection = 'postgres@rebuild' AND state = 'rebuilding'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(rebuilding > 0);
    let seen = AtomicUsize::new(0);
    let progress = |done: u64, _total: u64| {
        seen.store(done as usize, Ordering::SeqCst);
    };
    rebuild(&*store, &pool, &PostgresReadModel, None, 5, &progress)
        .await
        .unwrap();
    assert!(seen.load(Ordering::SeqCst) > 0);
    appender.await.unwrap();
    // The live projection goes on from the rebuild's checkpoints: everything is there once.
    catch_up(&*store, &pool, &PostgresReadModel, 50)
        .await
        .unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 70);
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_checkpoints WHERE projection <> 'postgres'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stale, 0);
    let not_running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints WHERE state <> 'running'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(not_running, 0);

    // Verify: equal to a from-scratch recomputation...
    let diffs = verify(&*store, &pool, &PostgresReadModel, 100, 10)
        .await
        .unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
    // ...and a tampered row is reported.
    sqlx::query(
        "UPDATE jobs SET status = 'completed' WHERE ctid IN (SELECT ctid FROM jobs LIMIT 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let diffs = verify(&*store, &pool, &PostgresReadModel, 100, 10)
        .await
        .unwrap();
    assert_eq!(diffs.len(), 2, "{diffs:?}");
    assert!(diffs.iter().all(|d| d.table == "jobs"));

    pool.close().await;
    db.drop_db().await;
    cleanup_prefix(&redis_url(), &prefix).await.unwrap();
}

//! A poison event stalls one projection at its position after bounded retries while
//! another projection keeps running; once the cause is fixed and the stall resumed, the
//! projection catches up with nothing skipped.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, MemoryStore, NewEvent, RecordedEvent, StoreConfig,
};
use jobsource_projections::worker::{self, WorkerConfig};
use jobsource_projections::{migrate, Archive, PgProjection, ProjectionError};
use jobsource_tests::TestDatabase;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::watch;

/// Counts events into a table; refuses "poison" events until `fixed` is set.
struct Picky {
    fixed: Arc<AtomicBool>,
}

#[async_trait]
impl PgProjection for Picky {
    fn name(&self) -> &str {
        "picky"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for e in events {
            if e.envelope.data.to_value()["poison"] == json!(true)
                && !self.fixed.load(Ordering::SeqCst)
            {
                return Err(ProjectionError::Apply {
                    position: e.position.to_string(),
                    message: "poison event".into(),
                });
            }
            sqlx::query("INSERT INTO picky (event_id) VALUES ($1)")
                .bind(e.envelope.event_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_event_stalls_one_projection_until_fixed() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig {
        partitions: 2,
        ..StoreConfig::default()
    }));
    let db = TestDatabase::create().await;
    let pool = db.pool(6).await.unwrap();
    migrate::migrate(&pool).await.unwrap();
    sqlx::query("CREATE TABLE picky (event_id uuid PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();

    let mut total = 0;
    let mut poison_stream = String::new();
    for i in 0..20 {
        let stream = format!("job-{}", uuid::Uuid::now_v7());
        let poison = i == 7;
        if poison {
            poison_stream = stream.clone();
        }
        store
            .append(AppendRequest::new(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("x", 1, json!({"i": i, "poison": poison}))],
            ))
            .await
            .unwrap();
        total += 1;
    }
    let stalled_partition = store.partition_of(&poison_stream);

    let fixed = Arc::new(AtomicBool::new(false));
    let (stop, stop_rx) = watch::channel(false);
    let config = WorkerConfig {
        batch: 3,
        max_attempts: 3,
        backoff: Duration::from_millis(10),
    };
    let archive = tokio::spawn(worker::run(
        store.clone(),
        pool.clone(),
        Arc::new(Archive),
        config.clone(),
        stop_rx.clone(),
    ));
    let picky = tokio::spawn(worker::run(
        store.clone(),
        pool.clone(),
        Arc::new(Picky {
            fixed: fixed.clone(),
        }),
        config,
        stop_rx,
    ));

    // The archive is unaffected and keeps following new events.
    wait_until("archive to catch up", || async {
        count(&pool, "events").await == total
    })
    .await;
    // The picky projection stalls on the poison event's partition, with the position shown.
    wait_until("picky to stall", || async {
        worker::status(&*store, &pool, 1000)
            .await
            .unwrap()
            .iter()
            .any(|s| s.projection == "picky" && s.state == "stalled")
    })
    .await;
    let status = worker::status(&*store, &pool, 1000).await.unwrap();
    let stalled: Vec<_> = status
        .iter()
        .filter(|s| s.projection == "picky" && s.state == "stalled")
        .collect();
    assert_eq!(stalled.len(), 1);
    assert_eq!(stalled[0].partition, stalled_partition);
    assert!(stalled[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("poison event"));
    assert!(stalled[0].lag > 0);
    // The other partition of the same projection went on.
    let applied_before_fix = count(&pool, "picky").await;
    assert!(applied_before_fix > 0 && applied_before_fix < total);
    store
        .append(AppendRequest::new(
            "job-late",
            ExpectedVersion::Any,
            vec![NewEvent::new("x", 1, json!({"late": true}))],
        ))
        .await
        .unwrap();
    total += 1;
    wait_until("archive to see the late event", || async {
        count(&pool, "events").await == total
    })
    .await;

    // Fix the cause, resume: everything is applied, nothing skipped, nothing twice.
    fixed.store(true, Ordering::SeqCst);
    assert_eq!(worker::resume(&pool, "picky").await.unwrap(), 1);
    wait_until("picky to catch up", || async {
        count(&pool, "picky").await == total
    })
    .await;
    let status = worker::status(&*store, &pool, 1000).await.unwrap();
    assert!(
        status.iter().all(|s| s.state == "running" && s.lag == 0),
        "{status:?}"
    );

    stop.send(true).unwrap();
    archive.await.unwrap().unwrap();
    picky.await.unwrap().unwrap();
    pool.close().await;
    db.drop_db().await;
}

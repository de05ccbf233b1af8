//! Long-running PostgreSQL projector on the subscriber runtime ([`crate::subscriber`]):
//! catches up every partition, then follows the live log.
//!
//! A failing batch is retried a bounded number of times with backoff; then that partition
//! of that projection is marked `stalled` with the error and the position of the first
//! event of the failing batch, and the worker stops applying it (it never skips an event).
//! Other partitions, and other projections (their own workers), keep going. Calling
//! [`resume`] clears the stall once the cause is fixed.

use std::sync::Arc;
use std::time::Duration;

use jobsource_eventstore::EventStore;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::error::ProjectionError;
use crate::runtime::PgProjection;
use crate::subscriber::pg::{PgHandler, PgStatusStore};
use crate::subscriber::{Subscriber, SubscriberConfig};

pub use crate::subscriber::BATCH_DURATION;

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Events per batch.
    pub batch: usize,
    /// Attempts of one batch before the partition stalls.
    pub max_attempts: u32,
    /// First retry delay (doubles each attempt).
    pub backoff: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch: 500,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
        }
    }
}

impl WorkerConfig {
    /// The runtime's settings for these (other fields at their defaults).
    pub fn subscriber(&self, parallel: usize) -> SubscriberConfig {
        SubscriberConfig {
            batch: self.batch,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            parallel,
            ..SubscriberConfig::default()
        }
    }
}

/// Runs `projection` on the subscriber runtime until `shutdown` turns true (checked
/// between batches), with its stalls in `projection_checkpoints`.
pub async fn run(
    store: Arc<dyn EventStore>,
    pool: PgPool,
    projection: Arc<dyn PgProjection>,
    config: WorkerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let subscriber = Arc::new(Subscriber::new(
        Arc::new(PgHandler::new(projection, pool.clone())),
        store,
        Arc::new(PgStatusStore::new(pool)),
        config.subscriber(1),
    ));
    subscriber.run(shutdown).await;
    Ok(())
}

/// Clears the stall of every partition of `projection` (after the cause is fixed).
pub async fn resume(pool: &PgPool, projection: &str) -> Result<u64, ProjectionError> {
    Ok(sqlx::query(
        "UPDATE projection_checkpoints SET state = 'running', updated_at = now() \
         WHERE projection = $1 AND state = 'stalled'",
    )
    .bind(projection)
    .execute(pool)
    .await?
    .rows_affected())
}

/// One partition's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// Projection name.
    pub projection: String,
    /// Partition.
    pub partition: u32,
    /// Checkpoint position (`<p>@<ms>-<seq>`).
    pub checkpoint: String,
    /// Events in the log after the checkpoint (capped at `lag_cap`).
    pub lag: u64,
    /// `running`, `stalled` or `stopped`.
    pub state: String,
    /// Last error, when stalled.
    pub last_error: Option<String>,
    /// Where the stall happened.
    pub error_position: Option<String>,
}

/// Status of every (projection, partition) with a checkpoint row.
pub async fn status(
    store: &dyn EventStore,
    pool: &PgPool,
    lag_cap: usize,
) -> Result<Vec<PartitionStatus>, ProjectionError> {
    type Row = (
        String,
        i32,
        i64,
        i64,
        String,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT projection, partition, log_ms, log_seq, state, last_error, error_position \
         FROM projection_checkpoints ORDER BY projection, partition",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (projection, partition, ms, seq, state, last_error, error_position) in rows {
        let after = jobsource_eventstore::LogId::new(ms as u64, seq as u64);
        let lag = store
            .read_partition(partition as u32, after, lag_cap)
            .await
            .map(|e| e.len() as u64)
            .unwrap_or(lag_cap as u64);
        out.push(PartitionStatus {
            projection,
            partition: partition as u32,
            checkpoint: format!("{partition}@{after}"),
            lag,
            state,
            last_error,
            error_position,
        });
    }
    Ok(out)
}

//! Long-running projector: catches up every partition, then follows the live log.
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
use crate::runtime::{run_batch, PgProjection};

/// Histogram of applied batches' durations (seconds), by `projection`.
pub const BATCH_DURATION: &str = "jobsource_projection_batch_duration_seconds";

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

/// Runs `projection` until `shutdown` turns true (checked between batches).
pub async fn run(
    store: Arc<dyn EventStore>,
    pool: PgPool,
    projection: Arc<dyn PgProjection>,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let partitions = store.partitions();
    let mut tail = store.tail(store.head().await?).await?;
    while !*shutdown.borrow() {
        let mut progressed = false;
        for p in 0..partitions {
            match is_stalled(&pool, projection.name(), p).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(projection = projection.name(), error = %e,
                        "database unavailable; projection waits");
                    tokio::time::sleep(config.backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let started = std::time::Instant::now();
            match apply_with_retries(&*store, &pool, &*projection, p, &config).await {
                Ok(n) => {
                    if n > 0 {
                        metrics::histogram!(BATCH_DURATION, "projection" => projection.name().to_owned())
                            .record(started.elapsed());
                    }
                    progressed |= n > 0
                }
                Err(e) => {
                    let at = first_position(&*store, &pool, projection.name(), p).await;
                    tracing::error!(projection = projection.name(), partition = p, error = %e,
                        position = at.as_deref().unwrap_or("?"), "projection stalled");
                    if let Err(mark) =
                        mark_stalled(&pool, projection.name(), p, &e.to_string(), at.as_deref())
                            .await
                    {
                        tracing::error!(projection = projection.name(), partition = p,
                            error = %mark, "cannot record the stall");
                    }
                }
            }
        }
        if !progressed {
            // Caught up: wait for the next appended event (blocking tail), a shutdown,
            // or a second (to re-check stalls that were resumed).
            crate::runtime::wait_for_append(
                &*store,
                &mut tail,
                &mut shutdown,
                Duration::from_secs(1),
            )
            .await;
        }
    }
    Ok(())
}

async fn apply_with_retries(
    store: &dyn EventStore,
    pool: &PgPool,
    projection: &dyn PgProjection,
    partition: u32,
    config: &WorkerConfig,
) -> Result<usize, ProjectionError> {
    let mut delay = config.backoff;
    let mut attempt = 1;
    loop {
        match run_batch(store, pool, projection, partition, config.batch).await {
            Ok(n) => return Ok(n),
            Err(e) if e.is_transient() => {
                // An outage is not the event's fault: wait for the backend, do not count.
                tracing::warn!(projection = projection.name(), partition, error = %e,
                    "backend unavailable; projection waits and retries");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) if attempt < config.max_attempts => {
                tracing::warn!(projection = projection.name(), partition, attempt, error = %e,
                    "projection batch failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Position of the first event after the checkpoint (where a stalled batch starts).
async fn first_position(
    store: &dyn EventStore,
    pool: &PgPool,
    projection: &str,
    partition: u32,
) -> Option<String> {
    let (ms, seq): (i64, i64) = sqlx::query_as(
        "SELECT log_ms, log_seq FROM projection_checkpoints WHERE projection = $1 AND partition = $2",
    )
    .bind(projection)
    .bind(partition as i32)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()?;
    let after = jobsource_eventstore::LogId::new(ms as u64, seq as u64);
    match store.read_partition(partition, after, 1).await {
        Ok(events) => events.first().map(|e| e.position.to_string()),
        // An undecodable entry is itself the cause: its position is in the error text.
        Err(_) => None,
    }
}

async fn is_stalled(
    pool: &PgPool,
    projection: &str,
    partition: u32,
) -> Result<bool, ProjectionError> {
    let state: Option<String> = sqlx::query_scalar(
        "SELECT state FROM projection_checkpoints WHERE projection = $1 AND partition = $2",
    )
    .bind(projection)
    .bind(partition as i32)
    .fetch_optional(pool)
    .await?;
    Ok(state.as_deref() == Some("stalled"))
}

async fn mark_stalled(
    pool: &PgPool,
    projection: &str,
    partition: u32,
    error: &str,
    position: Option<&str>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, partition, state, last_error, error_position) \
         VALUES ($1, $2, 'stalled', $3, $4) ON CONFLICT (projection, partition) \
         DO UPDATE SET state = 'stalled', last_error = $3, error_position = $4, updated_at = now()",
    )
    .bind(projection)
    .bind(partition as i32)
    .bind(error)
    .bind(position)
    .execute(pool)
    .await?;
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

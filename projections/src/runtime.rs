//! The projector runtime for PostgreSQL read models.
//!
//! One batch = one transaction: lock the partition's checkpoint row, read the next events
//! after it from the partition log, let the projection write its rows, move the
//! checkpoint, commit. A crash or error anywhere before the commit rolls back rows and
//! checkpoint together, so the batch is simply read again on restart: no acknowledged event
//! is lost and none is applied twice.

use async_trait::async_trait;
use jobsource_eventstore::{EventStore, LogId, RecordedEvent};
use sqlx::{PgPool, Postgres, Transaction};

use crate::checkpoint;
use crate::error::ProjectionError;

/// A read model kept in PostgreSQL.
#[async_trait]
pub trait PgProjection: Send + Sync {
    /// Name used for checkpoints and status (`archive`, `postgres`, ...).
    fn name(&self) -> &str;

    /// Writes the effect of `events` (one partition, in log order) inside `tx`.
    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError>;
}

/// Applies the next batch (at most `batch` events) of one partition; returns how many
/// events it applied (0 when the projection is caught up on that partition).
pub async fn run_batch(
    store: &dyn EventStore,
    pool: &PgPool,
    projection: &dyn PgProjection,
    partition: u32,
    batch: usize,
) -> Result<usize, ProjectionError> {
    run_batch_until(store, pool, projection, partition, batch, None).await
}

/// [`run_batch`] that applies nothing past `until` (a log id of this partition).
pub async fn run_batch_until(
    store: &dyn EventStore,
    pool: &PgPool,
    projection: &dyn PgProjection,
    partition: u32,
    batch: usize,
    until: Option<LogId>,
) -> Result<usize, ProjectionError> {
    let mut tx = pool.begin().await?;
    let after = checkpoint::lock(&mut tx, projection.name(), partition).await?;
    let mut events = store.read_partition(partition, after, batch).await?;
    if let Some(until) = until {
        events.retain(|e| e.position.id <= until);
    }
    if events.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    commit_batch(tx, projection, partition, &events).await?;
    Ok(events.len())
}

/// Writes `events` (not empty; one partition, in log order, right after the checkpoint
/// locked in `tx`) and moves the checkpoint to the last of them, in `tx`, then commits.
pub(crate) async fn commit_batch(
    mut tx: Transaction<'_, Postgres>,
    projection: &dyn PgProjection,
    partition: u32,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let Some(last) = events.last().map(|e| e.position.id) else {
        return tx.commit().await.map_err(ProjectionError::from);
    };
    projection.apply(&mut tx, events).await?;
    checkpoint::advance(
        &mut tx,
        projection.name(),
        partition,
        last,
        events.len() as u64,
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Runs batches on every partition until all are caught up; returns events applied.
pub async fn catch_up(
    store: &dyn EventStore,
    pool: &PgPool,
    projection: &dyn PgProjection,
    batch: usize,
) -> Result<u64, ProjectionError> {
    let mut total = 0u64;
    for p in 0..store.partitions() {
        loop {
            let n = run_batch(store, pool, projection, p, batch).await?;
            total += n as u64;
            if n < batch {
                break;
            }
        }
    }
    Ok(total)
}

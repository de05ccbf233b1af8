//! Read-ahead for PostgreSQL rebuilds: the next batch of a partition is read from the
//! log while the current one is applied.
//!
//! The live runtime ([`crate::runtime::run_batch_until`]) reads a batch inside the
//! transaction that applies it, so reading and writing alternate: the rebuild then runs
//! at about half the rate of either. A rebuild drains a whole partition in order, so the
//! ids it will read next are known as soon as a batch is read: this drain keeps one read
//! in flight while the transaction of the previous batch runs. Each batch is still one
//! transaction that locks the checkpoint row, checks it is where this drain left it, applies
//! and advances it; if another projector moved it meanwhile, the drain starts over from
//! the checkpoint, so no event is applied twice or skipped.

use jobsource_eventstore::{EventStore, LogId, RecordedEvent};
use sqlx::PgPool;

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::runtime::PgProjection;

/// One read: the events after `after` up to `until`, and whether more may follow.
async fn read(
    store: &dyn EventStore,
    partition: u32,
    after: LogId,
    batch: usize,
    until: LogId,
) -> Result<(Vec<RecordedEvent>, bool), ProjectionError> {
    let mut events = store.read_partition(partition, after, batch).await?;
    let full = events.len() == batch;
    events.retain(|e| e.position.id <= until);
    let more = full && events.len() == batch;
    Ok((events, more))
}

/// The checkpoint of `(projection, partition)` (creating its row when missing).
async fn checkpoint_of(
    pool: &PgPool,
    projection: &dyn PgProjection,
    partition: u32,
) -> Result<LogId, ProjectionError> {
    let mut tx = pool.begin().await?;
    let at = checkpoint::lock(&mut tx, projection.name(), partition).await?;
    tx.commit().await?;
    Ok(at)
}

/// Applies `events` (which follow `after`) in one transaction; `Some(checkpoint)` without
/// applying anything when the checkpoint is not at `after` any more.
async fn apply(
    pool: &PgPool,
    projection: &dyn PgProjection,
    partition: u32,
    after: LogId,
    events: &[RecordedEvent],
) -> Result<Option<LogId>, ProjectionError> {
    if events.is_empty() {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    let at = checkpoint::lock(&mut tx, projection.name(), partition).await?;
    if at != after {
        tx.rollback().await?;
        return Ok(Some(at));
    }
    crate::runtime::commit_batch(tx, projection, partition, events).await?;
    Ok(None)
}

/// Applies partition `partition` from its checkpoint up to `until`, reading each batch
/// while the previous one is written; calls `on_batch` with each batch's size and returns
/// the events applied.
pub async fn drain_until(
    store: &dyn EventStore,
    pool: &PgPool,
    projection: &dyn PgProjection,
    partition: u32,
    batch: usize,
    until: LogId,
    on_batch: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64, ProjectionError> {
    let batch = batch.max(1);
    let mut after = checkpoint_of(pool, projection, partition).await?;
    let (mut events, mut more) = read(store, partition, after, batch, until).await?;
    let mut applied = 0u64;
    while let Some(last) = events.last().map(|e| e.position.id) {
        let next = async {
            if more {
                read(store, partition, last, batch, until).await
            } else {
                Ok((Vec::new(), false))
            }
        };
        let write = apply(pool, projection, partition, after, &events);
        let (next, moved) = futures::try_join!(next, write)?;
        match moved {
            None => {
                applied += events.len() as u64;
                on_batch(events.len() as u64);
                after = last;
                (events, more) = next;
            }
            // Someone else advanced this checkpoint: go on from where it is.
            Some(at) => {
                after = at;
                (events, more) = read(store, partition, after, batch, until).await?;
            }
        }
    }
    Ok(applied)
}

//! Checkpoints: per (projection, partition), the last log id applied.

use jobsource_eventstore::LogId;
use sqlx::{Postgres, Transaction};

use crate::error::ProjectionError;

/// Reads and locks the checkpoint row of `(projection, partition)` inside `tx`, creating it
/// at the start of the log when missing. The row lock makes two projectors of the same
/// projection wait for each other instead of applying the same batch twice.
pub async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    projection: &str,
    partition: u32,
) -> Result<LogId, ProjectionError> {
    lock_fenced(tx, projection, partition)
        .await
        .map(|(at, _)| at)
}

/// [`lock`] that also returns the partition's fence (the highest lease epoch that wrote
/// it; 0 before any), read under the same row lock.
pub async fn lock_fenced(
    tx: &mut Transaction<'_, Postgres>,
    projection: &str,
    partition: u32,
) -> Result<(LogId, i64), ProjectionError> {
    // The row exists after a partition's first batch, so the lock is one statement; the
    // insert runs only the first time (and a racing insert is absorbed by the conflict).
    let select = "SELECT log_ms, log_seq, fence FROM projection_checkpoints \
                  WHERE projection = $1 AND partition = $2 FOR UPDATE";
    let row: Option<(i64, i64, i64)> = sqlx::query_as(select)
        .bind(projection)
        .bind(partition as i32)
        .fetch_optional(&mut **tx)
        .await?;
    let (ms, seq, fence) = match row {
        Some(row) => row,
        None => {
            sqlx::query(
                "INSERT INTO projection_checkpoints (projection, partition) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(projection)
            .bind(partition as i32)
            .execute(&mut **tx)
            .await?;
            sqlx::query_as(select)
                .bind(projection)
                .bind(partition as i32)
                .fetch_one(&mut **tx)
                .await?
        }
    };
    Ok((LogId::new(ms as u64, seq as u64), fence))
}

/// Moves the checkpoint of `(projection, partition)` to `to` inside `tx`, and its fence to
/// `fence` when given (in the same statement).
pub async fn advance(
    tx: &mut Transaction<'_, Postgres>,
    projection: &str,
    partition: u32,
    to: LogId,
    applied: u64,
    fence: Option<u64>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE projection_checkpoints SET log_ms = $3, log_seq = $4, events = events + $5, \
         fence = COALESCE($6, fence), updated_at = now() \
         WHERE projection = $1 AND partition = $2",
    )
    .bind(projection)
    .bind(partition as i32)
    .bind(to.ms as i64)
    .bind(to.seq as i64)
    .bind(applied as i64)
    .bind(fence.map(|f| f as i64))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sets the checkpoint of every partition of `projection` (replay from an offset).
pub async fn reset(
    pool: &sqlx::PgPool,
    projection: &str,
    cursor: &jobsource_eventstore::Cursor,
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    for p in 0..cursor.partitions() {
        let id = cursor.after(p);
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, partition, log_ms, log_seq) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (projection, partition) \
             DO UPDATE SET log_ms = $3, log_seq = $4, updated_at = now()",
        )
        .bind(projection)
        .bind(p as i32)
        .bind(id.ms as i64)
        .bind(id.seq as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

//! The PostgreSQL side of the runtime: a [`Handler`] for every [`PgProjection`] (rows and
//! checkpoint in one transaction) and a [`StatusStore`] on `projection_checkpoints`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jobsource_eventstore::{LogId, RecordedEvent};
use sqlx::PgPool;

use super::{Handler, HandlerError, Outcome, Recorded, StatusStore};
use crate::checkpoint;
use crate::error::ProjectionError;
use crate::runtime::PgProjection;

/// Runs a [`PgProjection`] on the runtime. One batch = one transaction: lock the
/// checkpoint row, check the lease epoch (`fence`) is not below the last writer's and the
/// checkpoint is still where the batch was read from, write the rows, move the checkpoint
/// and the fence, commit. A crash before the commit rolls back rows and checkpoint
/// together; a second worker that applied the batch first makes this one a no-op.
pub struct PgHandler {
    projection: Arc<dyn PgProjection>,
    pool: PgPool,
}

impl PgHandler {
    /// `projection` over `pool`.
    pub fn new(projection: Arc<dyn PgProjection>, pool: PgPool) -> Self {
        PgHandler { projection, pool }
    }
}

#[async_trait]
impl Handler for PgHandler {
    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT log_ms, log_seq FROM projection_checkpoints \
             WHERE projection = $1 AND partition = $2",
        )
        .bind(self.projection.name())
        .bind(partition as i32)
        .fetch_optional(&self.pool)
        .await
        .map_err(ProjectionError::from)?;
        Ok(row.map_or(LogId::ZERO, |(ms, seq)| LogId::new(ms as u64, seq as u64)))
    }

    async fn apply(
        &self,
        partition: u32,
        after: LogId,
        events: &[RecordedEvent],
        fence: Option<u64>,
    ) -> Result<Outcome, HandlerError> {
        let Some(last) = events.last().map(|e| e.position.id) else {
            return Ok(Outcome::Applied);
        };
        let name = self.projection.name();
        let mut tx = self.pool.begin().await.map_err(ProjectionError::from)?;
        let at = checkpoint::lock(&mut tx, name, partition).await?;
        if let Some(fence) = fence {
            // Under the row lock: a later lease holder's epoch wins.
            let stored: i64 = sqlx::query_scalar(
                "SELECT fence FROM projection_checkpoints WHERE projection = $1 AND partition = $2",
            )
            .bind(name)
            .bind(partition as i32)
            .fetch_one(&mut *tx)
            .await
            .map_err(ProjectionError::from)?;
            if stored > fence as i64 {
                tx.rollback().await.map_err(ProjectionError::from)?;
                return Ok(Outcome::Fenced);
            }
        }
        if at != after {
            tx.rollback().await.map_err(ProjectionError::from)?;
            return Ok(Outcome::Moved);
        }
        self.projection.apply(&mut tx, events).await?;
        checkpoint::advance(&mut tx, name, partition, last, events.len() as u64).await?;
        if let Some(fence) = fence {
            sqlx::query(
                "UPDATE projection_checkpoints SET fence = $3 WHERE projection = $1 AND partition = $2",
            )
            .bind(name)
            .bind(partition as i32)
            .bind(fence as i64)
            .execute(&mut *tx)
            .await
            .map_err(ProjectionError::from)?;
        }
        tx.commit().await.map_err(ProjectionError::from)?;
        Ok(Outcome::Applied)
    }
}

/// Stalls and running state in `projection_checkpoints` (`state`, `last_error`,
/// `error_position`), beside the PostgreSQL projections' checkpoints.
#[derive(Clone)]
pub struct PgStatusStore {
    pool: PgPool,
}

impl PgStatusStore {
    /// The store over `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        PgStatusStore { pool }
    }
}

fn db(e: sqlx::Error) -> HandlerError {
    ProjectionError::from(e).into()
}

#[async_trait]
impl StatusStore for PgStatusStore {
    async fn load(&self, consumer: &str) -> Result<HashMap<u32, Recorded>, HandlerError> {
        let rows: Vec<(i32, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT partition, state, last_error, error_position FROM projection_checkpoints \
             WHERE projection = $1",
        )
        .bind(consumer)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(p, state, error, position)| {
                let r = match state.as_str() {
                    "stalled" => Recorded::Stalled {
                        error: error.unwrap_or_default(),
                        position,
                    },
                    "stopped" => Recorded::Stopped,
                    _ => Recorded::Running,
                };
                (p as u32, r)
            })
            .collect())
    }

    async fn stall(
        &self,
        consumer: &str,
        partition: u32,
        error: &str,
        position: Option<&str>,
    ) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, partition, state, last_error, error_position) \
             VALUES ($1, $2, 'stalled', $3, $4) ON CONFLICT (projection, partition) \
             DO UPDATE SET state = 'stalled', last_error = $3, error_position = $4, updated_at = now()",
        )
        .bind(consumer)
        .bind(partition as i32)
        .bind(error)
        .bind(position)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn resume(&self, consumer: &str) -> Result<u64, HandlerError> {
        Ok(sqlx::query(
            "UPDATE projection_checkpoints SET state = 'running', updated_at = now() \
             WHERE projection = $1 AND state = 'stalled'",
        )
        .bind(consumer)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected())
    }

    async fn set_running(
        &self,
        consumer: &str,
        partitions: u32,
        running: bool,
    ) -> Result<(), HandlerError> {
        // A missing row is created at the start of the log, as a partition's first batch
        // would create it, so `projections status` in another process sees the state.
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, partition, state) \
             SELECT $1, p, $2 FROM generate_series(0, $3 - 1) AS p \
             ON CONFLICT (projection, partition) DO UPDATE SET state = $2, updated_at = now() \
             WHERE projection_checkpoints.state <> 'stalled'",
        )
        .bind(consumer)
        .bind(if running { "running" } else { "stopped" })
        .bind(partitions as i32)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}

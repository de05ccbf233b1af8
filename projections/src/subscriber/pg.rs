//! The PostgreSQL side of the runtime: a [`Handler`] for every [`PgProjection`] (rows and
//! checkpoint in one transaction) and a [`StatusStore`] on `projection_checkpoints`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
///
/// The handler remembers each partition's checkpoint as it last read or wrote it, for
/// [`CHECKPOINT_TTL`], instead of reading it from PostgreSQL before every batch: the
/// runtime asks before each batch of each partition, which under load was one query in six
/// of the projectors'. The memory is safe because `apply` checks the checkpoint under its
/// row lock anyway: if something else moved it (a second instance, a rebuild's swap), the
/// batch writes nothing ([`Outcome::Moved`]) and the entry is dropped. The TTL bounds how
/// long a partition with no new events takes to notice a checkpoint moved back (a replay
/// from an offset).
pub struct PgHandler {
    projection: Arc<dyn PgProjection>,
    pool: PgPool,
    known: Mutex<HashMap<u32, (LogId, Instant)>>,
}

/// How long a checkpoint this handler wrote is trusted without reading it again.
pub const CHECKPOINT_TTL: Duration = Duration::from_secs(1);

impl PgHandler {
    /// `projection` over `pool`.
    pub fn new(projection: Arc<dyn PgProjection>, pool: PgPool) -> Self {
        PgHandler {
            projection,
            pool,
            known: Mutex::new(HashMap::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (LogId, Instant)>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What happened to a batch of `partition`: remember the new checkpoint, or forget.
    fn settle(&self, partition: u32, applied_to: Option<LogId>) {
        let mut known = self.known();
        match applied_to {
            Some(at) => known.insert(partition, (at, Instant::now())),
            None => known.remove(&partition),
        };
    }
}

#[async_trait]
impl Handler for PgHandler {
    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError> {
        if let Some((at, when)) = self.known().get(&partition).copied() {
            if when.elapsed() < CHECKPOINT_TTL {
                return Ok(at);
            }
        }
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT log_ms, log_seq FROM projection_checkpoints \
             WHERE projection = $1 AND partition = $2",
        )
        .bind(self.projection.name())
        .bind(partition as i32)
        .fetch_optional(&self.pool)
        .await
        .map_err(ProjectionError::from)?;
        let at = row.map_or(LogId::ZERO, |(ms, seq)| LogId::new(ms as u64, seq as u64));
        self.known().insert(partition, (at, Instant::now()));
        Ok(at)
    }

    async fn apply(
        &self,
        partition: u32,
        after: LogId,
        events: &[RecordedEvent],
        fence: Option<u64>,
    ) -> Result<Outcome, HandlerError> {
        if events.is_empty() {
            return Ok(Outcome::Applied);
        }
        let result = self.apply_locked(partition, after, events, fence).await;
        let applied_to = match &result {
            Ok(Outcome::Applied) => events.last().map(|e| e.position.id),
            _ => None,
        };
        self.settle(partition, applied_to);
        result
    }
}

impl PgHandler {
    /// One batch in one transaction: lock the checkpoint row (reading the fence with it),
    /// check fence and position, write the rows, move checkpoint and fence, commit.
    async fn apply_locked(
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
        let (at, stored_fence) = checkpoint::lock_fenced(&mut tx, name, partition).await?;
        // Under the row lock: a later lease holder's epoch wins.
        if fence.is_some_and(|f| stored_fence > f as i64) {
            tx.rollback().await.map_err(ProjectionError::from)?;
            return Ok(Outcome::Fenced);
        }
        if at != after {
            tx.rollback().await.map_err(ProjectionError::from)?;
            return Ok(Outcome::Moved);
        }
        self.projection.apply(&mut tx, events).await?;
        checkpoint::advance(&mut tx, name, partition, last, events.len() as u64, fence).await?;
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

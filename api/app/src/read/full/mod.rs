//! The production read side: the `redis` projection for hot lookups and claims, the
//! `postgres` projection for lists and stats.
//!
//! | query | served from |
//! |---|---|
//! | [`ReadSide::job`] | `<rm>:job:<id>` hash (one `HGETALL`) |
//! | [`ReadSide::workflow`] | `<rm>:workflow:<id>` hash, then every step job's hash (one pipeline) |
//! | [`ReadSide::pending`] | the `<rm>:jobs:pending` zset (score = priority) |
//! | [`ReadSide::machine`] | `<rm>:machine:<id>` hash (one `HGETALL`) |
//! | [`ReadSide::machines`] | PostgreSQL table `machines` |
//! | [`ReadSide::jobs`], [`ReadSide::workflows`], stats | PostgreSQL tables `jobs`, `workflows` |
//! | [`ReadSide::has_reached`] | the `redis` checkpoint hash ([`Model::Hot`]) or the `postgres` row of `projection_checkpoints` ([`Model::Lists`]) |
//!
//! The code that knows the keys, fields, tables and columns lives beside each model's
//! writer: `jobsource_projections::redis::reader` and
//! `jobsource_projections::postgres::reader`; this type routes each query to one of them
//! and maps their errors to [`QueryError`]. Answers have the same shape and order as
//! [`super::memory::MemoryReadModel`]'s for the same log.
//!
//! Two choices worth knowing:
//! - `depends_on` of a job comes from the hash's JSON field (submission order); the
//!   `<rm>:job:<id>:depends_on` set is kept for seed clients that read it directly.
//! - Lag in [`ReadSide::projections`] counts the log entries after the checkpoint, reading
//!   at most [`LAG_CAP`] of them per partition (a larger lag shows as [`LAG_CAP`]).
//!
//! Rebuilds of the PostgreSQL projections (`postgres`, `archive`) run in a background task
//! of this process ([`jobsource_projections::rebuild::rebuild`]: shadow tables, atomic
//! swap); one at a time per projection. The trait gives an offset, not "resume", so each
//! rebuild starts over from that offset (an unfinished shadow model is dropped). Progress
//! is tracked for `GET /v1/projections` (events done, total, rate, ETA).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsource_eventstore::{Cursor, EventStore, Offset, Position};
use jobsource_projections::postgres::reader;
use jobsource_projections::RedisReadModel;

use super::rebuilds::{RebuildStatus, RebuildTracker};
use jobsource_eventstore::redis::RedisConn;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    JobQuery, JobStats, JobView, MachineQuery, MachineView, Model, Page, PendingEntry,
    ProjectionStatus, QueryError, ReadSide, WorkflowQuery, WorkflowStats, WorkflowView,
};

mod admin;

/// Most log entries read per partition to measure a projection's lag.
pub const LAG_CAP: usize = 10_000;

/// Events per batch of an API-started rebuild.
const REBUILD_BATCH: usize = 1000;

/// How long a backend check of [`ReadSide::health`] may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The projection whose checkpoints tell how far [`Model::Lists`] is.
const LISTS_PROJECTION: &str = "postgres";

/// The Redis + PostgreSQL read side.
pub struct FullReadSide {
    store: Arc<dyn EventStore>,
    redis: Arc<RedisReadModel>,
    pool: PgPool,
    /// Projections with a rebuild running in this process.
    rebuilds: RebuildTracker,
    /// The rebuildable models (`archive`, `postgres`, `redis`).
    rebuilders: Vec<Arc<dyn jobsource_projections::rebuilder::Rebuilder>>,
}

impl FullReadSide {
    /// A read side over the `redis` projection `redis_model` and the PostgreSQL read
    /// models in `pool`; `store` is the log both are projected from (lags, rebuilds).
    pub fn new(store: Arc<dyn EventStore>, redis_model: Arc<RedisReadModel>, pool: PgPool) -> Self {
        let rebuilders = jobsource_projections::rebuilder::durable(
            &store,
            Some(&pool),
            Some((redis_model.connection(), redis_model.keys().namespace())),
        );
        FullReadSide {
            store,
            redis: redis_model,
            pool,
            rebuilds: RebuildTracker::new(),
            rebuilders,
        }
    }

    /// True while a rebuild of projection `name` started by [`ReadSide::rebuild`] on this
    /// value is running.
    pub fn is_rebuilding(&self, name: &str) -> bool {
        self.rebuilds.is_running(name)
    }

    fn conn(&self) -> RedisConn {
        self.redis.connection()
    }
}

async fn with_timeout<F, E>(check: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", HEALTH_TIMEOUT.as_secs())),
    }
}

#[async_trait]
impl ReadSide for FullReadSide {
    fn mode(&self) -> &'static str {
        "redis+postgres"
    }

    async fn job(&self, id: Uuid) -> Result<Option<JobView>, QueryError> {
        Ok(self.redis.job(id).await?)
    }

    async fn jobs(&self, q: &JobQuery) -> Result<Page<JobView>, QueryError> {
        Ok(reader::jobs(&self.pool, q).await?)
    }

    async fn job_stats(&self, since: Option<DateTime<Utc>>) -> Result<JobStats, QueryError> {
        Ok(reader::job_stats(&self.pool, since).await?)
    }

    async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowView>, QueryError> {
        Ok(self.redis.workflow(id).await?)
    }

    async fn workflows(&self, q: &WorkflowQuery) -> Result<Page<WorkflowView>, QueryError> {
        Ok(reader::workflows(&self.pool, q).await?)
    }

    async fn workflow_stats(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<WorkflowStats, QueryError> {
        Ok(reader::workflow_stats(&self.pool, since).await?)
    }

    /// Claim order (priority descending, then id ascending) from the `<rm>:jobs:pending`
    /// zset (see [`RedisReadModel::pending`]).
    async fn pending(
        &self,
        after: Option<PendingEntry>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>, QueryError> {
        Ok(self.redis.pending(after, limit).await?)
    }

    async fn machine(&self, id: &str) -> Result<Option<MachineView>, QueryError> {
        Ok(self.redis.machine(id).await?)
    }

    async fn machines(&self, q: &MachineQuery) -> Result<Page<MachineView>, QueryError> {
        Ok(reader::machines(&self.pool, q).await?)
    }

    async fn has_reached(&self, model: Model, position: Position) -> Result<bool, QueryError> {
        let applied = match model {
            Model::Hot => self
                .redis
                .checkpoint(position.partition)
                .await
                .map_err(QueryError::from)?,
            Model::Lists => {
                reader::applied(&self.pool, LISTS_PROJECTION, position.partition).await?
            }
        };
        Ok(applied >= position.id)
    }

    async fn projections(&self) -> Result<Vec<ProjectionStatus>, QueryError> {
        self.status_rows().await
    }

    fn rebuilds(&self) -> Vec<(String, RebuildStatus)> {
        self.rebuilds.snapshot()
    }

    async fn rebuild(&self, name: &str, from: Offset) -> Result<(), QueryError> {
        self.start_rebuild(name, from).await
    }

    async fn queue_counts(&self) -> Result<super::QueueCounts, QueryError> {
        Ok(self.redis.queue_counts().await?)
    }

    async fn events(
        &self,
        after: Cursor,
        filter: &super::events::EventFilter,
        limit: usize,
    ) -> Result<super::events::EventPage, QueryError> {
        super::archive_page::page(&*self.store, &self.pool, after, filter, limit).await
    }

    async fn health(&self) -> Vec<(&'static str, Result<(), String>)> {
        let mut conn = self.conn();
        let redis = with_timeout(async {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
        });
        let postgres = with_timeout(async {
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&self.pool)
                .await
                .map(|_| ())
        });
        let (redis, postgres) = tokio::join!(redis, postgres);
        vec![("redis", redis), ("postgres", postgres)]
    }
}

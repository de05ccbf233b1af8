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
//! Answers have the same shape and order as [`super::memory::MemoryReadModel`]'s for the
//! same log: views are built with the same [`StepView::new`] and
//! [`super::view::progress_percentage`], and times are shown with
//! [`super::view::timestamp`] (RFC 3339, milliseconds, `Z`). In the Redis hashes an empty
//! field means "absent".
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
//! rebuild starts over from that offset (an unfinished shadow model is dropped). The
//! `redis` projection has no rebuild yet, over the API or the CLI.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsource_domain::workflow::StepSpec;
use jobsource_eventstore::{Cursor, EventStore, LogId, Offset, Position};
use jobsource_projections::{redis_worker, worker, PgProjection, RedisReadModel};
use redis::aio::ConnectionManager;
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::machine_view::{MachineQuery, MachineView, MACHINE_COLUMNS};
use super::view::{progress_percentage, timestamp};
use super::QueryError;
use super::{
    JobQuery, JobStats, JobView, Model, Page, PendingEntry, ProjectionStatus, ReadSide, StepView,
    WorkflowQuery, WorkflowStats, WorkflowView,
};

/// Most log entries read per partition to measure a projection's lag.
pub const LAG_CAP: usize = 10_000;

/// Events per batch of an API-started rebuild.
const REBUILD_BATCH: usize = 1000;

/// How long a backend check of [`ReadSide::health`] may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The projection whose checkpoints tell how far [`Model::Lists`] is.
const LISTS_PROJECTION: &str = "postgres";

/// PostgreSQL projections that can be rebuilt.
const PG_PROJECTIONS: [&str; 2] = ["postgres", "archive"];

const JOB_COLUMNS: &str = "id, type, status, priority, progress, stage, prompt, parameters, \
     requirements, webhook_url, workflow_id, step_index, depends_on, max_retries, attempt, \
     retry_count, worker_id, machine_id, result, error, created_at, updated_at, started_at, \
     completed_at, version";

const WORKFLOW_COLUMNS: &str = "id, name, description, status, total_steps, completed_steps, \
     job_ids, webhook_url, error, created_at, updated_at, completed_at, version";

/// The Redis + PostgreSQL read side.
pub struct FullReadSide {
    store: Arc<dyn EventStore>,
    redis: Arc<RedisReadModel>,
    pool: PgPool,
    /// Projections with a rebuild running in this process.
    rebuilds: Arc<Mutex<HashSet<&'static str>>>,
}

impl FullReadSide {
    /// A read side over the `redis` projection `redis_model` and the PostgreSQL read
    /// models in `pool`; `store` is the log both are projected from (lags, rebuilds).
    pub fn new(store: Arc<dyn EventStore>, redis_model: Arc<RedisReadModel>, pool: PgPool) -> Self {
        FullReadSide {
            store,
            redis: redis_model,
            pool,
            rebuilds: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// True while a rebuild of projection `name` started by [`ReadSide::rebuild`] on this
    /// value is running.
    pub fn is_rebuilding(&self, name: &str) -> bool {
        self.rebuilds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.connection()
    }

    fn pending_key(&self) -> String {
        self.redis.keys().key("jobs:pending")
    }

    /// Members of score bucket `score` that sort after `after` (by id), at most `want`.
    async fn bucket_after(
        &self,
        conn: &mut ConnectionManager,
        score: f64,
        after: Uuid,
        want: usize,
    ) -> Result<Vec<String>, QueryError> {
        let key = self.pending_key();
        let after = after.to_string();
        // Ranks [lo, hi) hold the bucket, in id order (lexical order of equal scores; the
        // hyphenated lowercase form of UUIDs sorts like the UUIDs).
        let (lo, hi, rank, member_score): (i64, i64, Option<i64>, Option<f64>) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({score}"))
            .cmd("ZCOUNT")
            .arg(&key)
            .arg("-inf")
            .arg(score)
            .cmd("ZRANK")
            .arg(&key)
            .arg(&after)
            .cmd("ZSCORE")
            .arg(&key)
            .arg(&after)
            .query_async(conn)
            .await?;
        let start = match (rank, member_score) {
            // `after` is still queued in this bucket: continue right behind it.
            (Some(r), Some(s)) if s == score => r + 1,
            // It left the queue (claimed, cancelled): binary search by rank.
            _ => {
                let (mut a, mut b) = (lo, hi);
                while a < b {
                    let mid = a + (b - a) / 2;
                    let at: Vec<String> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(mid)
                        .arg(mid)
                        .query_async(conn)
                        .await?;
                    match at.first() {
                        Some(m) if *m <= after => a = mid + 1,
                        _ => b = mid,
                    }
                }
                a
            }
        };
        if start >= hi {
            return Ok(Vec::new());
        }
        let want = i64::try_from(want).unwrap_or(i64::MAX);
        let end = hi.min(start.saturating_add(want)) - 1;
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(start)
            .arg(end)
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        // Between the calls above the queue may have moved: keep the bucket only.
        Ok(rows
            .into_iter()
            .filter(|(_, s)| *s == score)
            .map(|(m, _)| m)
            .collect())
    }

    /// Members of score bucket `score` in id order, at most `want`.
    async fn bucket(
        &self,
        conn: &mut ConnectionManager,
        score: f64,
        want: usize,
    ) -> Result<Vec<String>, QueryError> {
        Ok(redis::cmd("ZRANGE")
            .arg(self.pending_key())
            .arg(score)
            .arg(score)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(want)
            .query_async(conn)
            .await?)
    }

    /// Log entries of partition `p` after `after` (at most [`LAG_CAP`]).
    async fn lag(&self, p: u32, after: LogId, head: &Cursor) -> u64 {
        if after >= head.after(p) {
            return 0;
        }
        // An unreadable entry (the likely cause of a stall) must not hide the status: count
        // it as the cap, like the PostgreSQL status does.
        self.store
            .read_partition(p, after, LAG_CAP)
            .await
            .map_or(LAG_CAP as u64, |e| e.len() as u64)
    }

    /// Starts a background rebuild of the `redis` model (new key generation, swap).
    async fn rebuild_redis(&self, from: Offset) -> Result<(), QueryError> {
        let start = self.store.resolve(&from).await?;
        if !self
            .rebuilds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert("redis")
        {
            return Err(QueryError::bad_request(
                "name",
                "a rebuild of redis is already running",
            ));
        }
        let guard = RebuildGuard {
            rebuilds: self.rebuilds.clone(),
            name: "redis",
        };
        let (store, conn) = (self.store.clone(), self.conn());
        let rm = self.redis.keys().namespace().to_owned();
        tracing::info!(projection = "redis", from = %from, "rebuild started");
        tokio::spawn(async move {
            let _guard = guard;
            let begun = std::time::Instant::now();
            let no_progress = |_: u64, _: u64| {};
            match jobsource_projections::redis_rebuild::rebuild(
                &*store,
                conn,
                &rm,
                Some(start),
                REBUILD_BATCH,
                &no_progress,
            )
            .await
            {
                Ok(n) => tracing::info!(
                    projection = "redis",
                    events = n,
                    events_per_s = jobsource_projections::rebuild::rate(n, begun),
                    "rebuild swapped in"
                ),
                Err(e) => tracing::error!(projection = "redis", error = %e,
                    "rebuild failed; the live model keeps serving (a new rebuild starts over)"),
            }
        });
        Ok(())
    }

    /// The `redis` projection's status rows.
    async fn redis_status(&self, head: &Cursor) -> Result<Vec<ProjectionStatus>, QueryError> {
        let mut out = Vec::new();
        let rm = self.redis.keys().namespace();
        let rebuilding = jobsource_projections::redis_rebuild::is_rebuilding(&self.conn(), rm)
            .await
            .map_err(QueryError::from)?;
        for p in 0..self.store.partitions() {
            let checkpoint = self.redis.checkpoint(p).await.map_err(QueryError::from)?;
            let stall = redis_worker::stalled(&self.redis, p)
                .await
                .map_err(QueryError::from)?;
            out.push(ProjectionStatus {
                projection: "redis".into(),
                partition: p,
                checkpoint: Position::new(p, checkpoint).to_string(),
                lag: self.lag(p, checkpoint, head).await,
                state: if stall.is_some() {
                    "stalled"
                } else if rebuilding {
                    "rebuilding"
                } else {
                    "running"
                }
                .into(),
                last_error: stall.map(|(position, error)| with_position(error, Some(position))),
            });
        }
        Ok(out)
    }
}

/// `error (at position)`, or just the error when the position is unknown.
fn with_position(error: String, position: Option<String>) -> String {
    match position {
        Some(p) if !p.is_empty() => format!("{error} (at {p})"),
        _ => error,
    }
}

/// The same paging rule as the embedded model: `items` holds up to `limit + 1` rows.
fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| id(i).to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

/// `LIMIT` of a page query: one row more than the page, to tell whether more exist.
fn fetch_limit(limit: usize) -> i64 {
    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// One entity hash of the `redis` projection, with typed access to its fields.
struct Fields<'a> {
    kind: &'static str,
    id: Uuid,
    map: &'a HashMap<String, String>,
}

impl Fields<'_> {
    fn bad(&self, field: &str, why: impl std::fmt::Display) -> QueryError {
        QueryError::Internal(format!(
            "redis read model: {} {}: field {field}: {why}",
            self.kind, self.id
        ))
    }

    /// The field, `None` when missing or empty.
    fn opt(&self, field: &str) -> Option<&str> {
        self.map
            .get(field)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn string(&self, field: &str) -> Option<String> {
        self.opt(field).map(str::to_owned)
    }

    /// A number; a missing field reads as zero.
    fn num<T: FromStr + Default>(&self, field: &str) -> Result<T, QueryError>
    where
        T::Err: std::fmt::Display,
    {
        self.opt(field).map_or(Ok(T::default()), |s| {
            s.parse().map_err(|e| self.bad(field, e))
        })
    }

    fn parsed<T: FromStr>(&self, field: &str) -> Result<Option<T>, QueryError>
    where
        T::Err: std::fmt::Display,
    {
        self.opt(field)
            .map(|s| s.parse().map_err(|e| self.bad(field, e)))
            .transpose()
    }

    fn json<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<Option<T>, QueryError> {
        self.opt(field)
            .map(|s| serde_json::from_str(s).map_err(|e| self.bad(field, e)))
            .transpose()
    }
}

/// A job hash as a view (`None` when the job is not in the model).
fn job_from_hash(
    id: Uuid,
    map: &HashMap<String, String>,
    depends_on: Vec<Uuid>,
) -> Result<Option<JobView>, QueryError> {
    let f = Fields {
        kind: "job",
        id,
        map,
    };
    let Some(status) = f.string("status") else {
        return Ok(None);
    };
    let (prompt, parameters) = match f.json::<Value>("payload")? {
        Some(Value::Object(mut payload)) => (
            match payload.remove("prompt") {
                Some(Value::String(p)) => Some(p),
                _ => None,
            },
            match payload.remove("parameters") {
                Some(Value::Object(p)) => p,
                _ => Map::new(),
            },
        ),
        _ => (None, Map::new()),
    };
    let pending = status == "pending";
    let leased = status == "assigned" || status == "running";
    Ok(Some(JobView {
        id: f.parsed("id")?.unwrap_or(id),
        job_type: f.string("type").unwrap_or_default(),
        status,
        priority: f.num("priority")?,
        progress: f.num("progress")?,
        stage: f.string("stage"),
        prompt,
        parameters,
        requirements: f.json("requirements")?,
        webhook_url: f.string("webhook_url"),
        workflow_id: f.parsed("workflow_id")?,
        step_index: f.parsed("step_index")?,
        depends_on,
        worker_id: f.string("worker_id"),
        machine_id: f.string("machine_id"),
        attempt: f.num("attempt")?,
        retry_count: f.num("retry_count")?,
        max_retries: f.num("max_retries")?,
        result: f.json("result")?,
        error: f.json("error")?,
        created_at: f.string("created_at"),
        updated_at: f.string("updated_at"),
        started_at: f.string("started_at"),
        completed_at: f.string("completed_at"),
        available_at: f.string("available_at").filter(|_| pending),
        lease_expires_at: f.string("lease_expires_at").filter(|_| leased),
        version: f.num("version")?,
    }))
}

/// An `integer` column converted to the view's type.
fn int<T: TryFrom<i32>>(row: &PgRow, column: &str) -> Result<T, QueryError> {
    let v: i32 = row.try_get(column)?;
    T::try_from(v).map_err(|_| out_of_range(column, v))
}

fn out_of_range(column: &str, v: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(format!("postgres: {column} = {v} out of range"))
}

fn opt_int<T: TryFrom<i32>>(row: &PgRow, column: &str) -> Result<Option<T>, QueryError> {
    row.try_get::<Option<i32>, _>(column)?
        .map(|v| T::try_from(v).map_err(|_| out_of_range(column, v)))
        .transpose()
}

/// The `version` (`bigint`) column.
fn version(row: &PgRow) -> Result<u64, QueryError> {
    let v: i64 = row.try_get("version")?;
    u64::try_from(v).map_err(|_| out_of_range("version", v))
}

fn time(row: &PgRow, column: &str) -> Result<Option<String>, QueryError> {
    Ok(row
        .try_get::<Option<DateTime<Utc>>, _>(column)?
        .map(timestamp))
}

fn job_from_row(row: &PgRow) -> Result<JobView, QueryError> {
    Ok(JobView {
        available_at: None,
        lease_expires_at: None,
        id: row.try_get("id")?,
        job_type: row.try_get("type")?,
        status: row.try_get("status")?,
        priority: int(row, "priority")?,
        progress: int(row, "progress")?,
        stage: row.try_get("stage")?,
        prompt: row.try_get("prompt")?,
        parameters: match row.try_get::<Value, _>("parameters")? {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        requirements: row.try_get("requirements")?,
        webhook_url: row.try_get("webhook_url")?,
        workflow_id: row.try_get("workflow_id")?,
        step_index: opt_int(row, "step_index")?,
        depends_on: row.try_get("depends_on")?,
        worker_id: row.try_get("worker_id")?,
        machine_id: row.try_get("machine_id")?,
        attempt: int(row, "attempt")?,
        retry_count: int(row, "retry_count")?,
        max_retries: int(row, "max_retries")?,
        result: row.try_get("result")?,
        error: row.try_get("error")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        started_at: time(row, "started_at")?,
        completed_at: time(row, "completed_at")?,
        version: version(row)?,
    })
}

fn workflow_from_row(row: &PgRow) -> Result<WorkflowView, QueryError> {
    let total_steps = int(row, "total_steps")?;
    let completed_steps = int(row, "completed_steps")?;
    Ok(WorkflowView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        status: row.try_get("status")?,
        total_steps,
        completed_steps,
        progress_percentage: progress_percentage(completed_steps, total_steps),
        job_ids: row.try_get("job_ids")?,
        webhook_url: row.try_get("webhook_url")?,
        error: row.try_get("error")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        completed_at: time(row, "completed_at")?,
        version: version(row)?,
        steps: Vec::new(),
    })
}

/// Removes a projection from the running rebuilds when the rebuild task ends (or panics).
struct RebuildGuard {
    rebuilds: Arc<Mutex<HashSet<&'static str>>>,
    name: &'static str,
}

impl Drop for RebuildGuard {
    fn drop(&mut self) {
        self.rebuilds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.name);
    }
}

fn pg_projection(name: &str) -> Option<(&'static str, Box<dyn PgProjection>)> {
    match name {
        "postgres" => Some((
            "postgres",
            Box::new(jobsource_projections::PostgresReadModel),
        )),
        "archive" => Some(("archive", Box::new(jobsource_projections::Archive))),
        _ => None,
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
        let keys = self.redis.keys();
        let mut conn = self.conn();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.job(&id.to_string()))
            .query_async(&mut conn)
            .await?;
        let depends_on = Fields {
            kind: "job",
            id,
            map: &hash,
        }
        .json::<Vec<Uuid>>("depends_on")?
        .unwrap_or_default();
        job_from_hash(id, &hash, depends_on)
    }

    async fn jobs(&self, q: &JobQuery) -> Result<Page<JobView>, QueryError> {
        let mut sql =
            QueryBuilder::<Postgres>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE true"));
        if let Some(status) = &q.status {
            sql.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(job_type) = &q.job_type {
            sql.push(" AND type = ").push_bind(job_type.clone());
        }
        if let Some(workflow_id) = q.workflow_id {
            sql.push(" AND workflow_id = ").push_bind(workflow_id);
        }
        if let Some(after) = q.after {
            sql.push(" AND id > ").push_bind(after);
        }
        sql.push(" ORDER BY id LIMIT ")
            .push_bind(fetch_limit(q.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, q.limit, |j| j.id))
    }

    async fn job_stats(&self, since: Option<DateTime<Utc>>) -> Result<JobStats, QueryError> {
        let mut sql = QueryBuilder::<Postgres>::new("SELECT status, type, count(*) FROM jobs");
        if let Some(since) = since {
            sql.push(" WHERE created_at >= ").push_bind(since);
        }
        sql.push(" GROUP BY status, type");
        let rows: Vec<(String, String, i64)> = sql.build_query_as().fetch_all(&self.pool).await?;
        let mut stats = JobStats::default();
        for (status, job_type, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            stats.total += n;
            *stats.by_status.entry(status).or_default() += n;
            *stats.by_type.entry(job_type).or_default() += n;
        }
        Ok(stats)
    }

    async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowView>, QueryError> {
        let keys = self.redis.keys();
        let mut conn = self.conn();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.workflow(&id.to_string()))
            .query_async(&mut conn)
            .await?;
        let f = Fields {
            kind: "workflow",
            id,
            map: &hash,
        };
        let Some(status) = f.string("status") else {
            return Ok(None);
        };
        let job_ids: Vec<Uuid> = f.json("job_ids")?.unwrap_or_default();
        let specs: Vec<StepSpec> = f.json("steps")?.unwrap_or_default();
        let step_jobs = &job_ids[..job_ids.len().min(specs.len())];
        let hashes: Vec<HashMap<String, String>> = if step_jobs.is_empty() {
            Vec::new()
        } else {
            let mut pipe = redis::pipe();
            for job in step_jobs {
                pipe.cmd("HGETALL").arg(keys.job(&job.to_string()));
            }
            pipe.query_async(&mut conn).await?
        };
        let mut steps = Vec::with_capacity(step_jobs.len());
        for (i, ((job_id, spec), hash)) in step_jobs.iter().zip(&specs).zip(&hashes).enumerate() {
            let job = job_from_hash(*job_id, hash, Vec::new())?;
            steps.push(StepView::new(
                i as u32,
                *job_id,
                &spec.job_type,
                &spec.depends_on,
                job,
            ));
        }
        let total_steps = f.num("total_steps")?;
        let completed_steps = f.num("completed_steps")?;
        Ok(Some(WorkflowView {
            id: f.parsed("id")?.unwrap_or(id),
            name: f.string("name").unwrap_or_default(),
            description: f.string("description"),
            status,
            total_steps,
            completed_steps,
            progress_percentage: progress_percentage(completed_steps, total_steps),
            job_ids,
            webhook_url: f.string("webhook_url"),
            error: f.json("error")?,
            created_at: f.string("created_at"),
            updated_at: f.string("updated_at"),
            completed_at: f.string("completed_at"),
            version: f.num("version")?,
            steps,
        }))
    }

    async fn workflows(&self, q: &WorkflowQuery) -> Result<Page<WorkflowView>, QueryError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE true"
        ));
        if let Some(status) = &q.status {
            sql.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(after) = q.after {
            sql.push(" AND id > ").push_bind(after);
        }
        sql.push(" ORDER BY id LIMIT ")
            .push_bind(fetch_limit(q.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(workflow_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, q.limit, |w| w.id))
    }

    async fn workflow_stats(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<WorkflowStats, QueryError> {
        let mut sql = QueryBuilder::<Postgres>::new("SELECT status, count(*) FROM workflows");
        if let Some(since) = since {
            sql.push(" WHERE created_at >= ").push_bind(since);
        }
        sql.push(" GROUP BY status");
        let rows: Vec<(String, i64)> = sql.build_query_as().fetch_all(&self.pool).await?;
        let mut stats = WorkflowStats::default();
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            stats.total += n;
            *stats.by_status.entry(status).or_default() += n;
        }
        Ok(stats)
    }

    /// Claim order is priority descending, then id ascending. The zset sorts equal scores
    /// by member ascending, so each score bucket is read ascending (`ZRANGE ... BYSCORE`),
    /// buckets from the highest score down (`ZREVRANGEBYSCORE (score -inf LIMIT 0 1` finds
    /// the next one); a bucket resumed after `after` starts behind it by rank.
    async fn pending(
        &self,
        after: Option<PendingEntry>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>, QueryError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let key = self.pending_key();
        let mut conn = self.conn();
        let (mut score, mut resume_after) = match after {
            Some(a) => (f64::from(a.priority), Some(a.job_id)),
            None => {
                let top: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await?;
                match top.first() {
                    Some((_, s)) => (*s, None),
                    None => return Ok(out),
                }
            }
        };
        loop {
            let want = limit - out.len();
            let members = match resume_after.take() {
                Some(a) => self.bucket_after(&mut conn, score, a, want).await?,
                None => self.bucket(&mut conn, score, want).await?,
            };
            for m in members {
                match m.parse::<Uuid>() {
                    Ok(job_id) => out.push(PendingEntry {
                        // Scores are priorities 0..=100.
                        priority: score.clamp(0.0, f64::from(u8::MAX)) as u8,
                        job_id,
                    }),
                    Err(e) => tracing::warn!(member = %m, error = %e,
                        "pending zset member is not a job id; skipped"),
                }
            }
            if out.len() >= limit {
                break;
            }
            let next: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&key)
                .arg(format!("({score}"))
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(1)
                .query_async(&mut conn)
                .await?;
            match next.first() {
                Some((_, s)) => score = *s,
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn machine(&self, id: &str) -> Result<Option<MachineView>, QueryError> {
        let key = jobsource_projections::redis_machines::machine_key(self.redis.keys(), id);
        let mut conn = self.conn();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await?;
        MachineView::from_hash(id, &hash)
    }

    async fn machines(&self, q: &MachineQuery) -> Result<Page<MachineView>, QueryError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE true"
        ));
        if let Some(status) = &q.status {
            sql.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(after) = &q.after {
            sql.push(" AND id COLLATE \"C\" > ")
                .push_bind(after.clone());
        }
        // Byte order, as the embedded model's map sorts.
        sql.push(" ORDER BY id COLLATE \"C\" LIMIT ")
            .push_bind(fetch_limit(q.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        let mut items = rows
            .iter()
            .map(MachineView::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > q.limit {
            items.truncate(q.limit);
            items.last().map(|m| m.machine_id.clone())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn has_reached(&self, model: Model, position: Position) -> Result<bool, QueryError> {
        let applied = match model {
            Model::Hot => self
                .redis
                .checkpoint(position.partition)
                .await
                .map_err(QueryError::from)?,
            Model::Lists => match i32::try_from(position.partition) {
                Ok(partition) => {
                    let row: Option<(i64, i64)> = sqlx::query_as(
                        "SELECT log_ms, log_seq FROM projection_checkpoints \
                         WHERE projection = $1 AND partition = $2",
                    )
                    .bind(LISTS_PROJECTION)
                    .bind(partition)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map_or(LogId::ZERO, |(ms, seq)| {
                        LogId::new(
                            u64::try_from(ms).unwrap_or(0),
                            u64::try_from(seq).unwrap_or(0),
                        )
                    })
                }
                // No such partition: nothing was applied there.
                Err(_) => LogId::ZERO,
            },
        };
        Ok(applied >= position.id)
    }

    async fn projections(&self) -> Result<Vec<ProjectionStatus>, QueryError> {
        let mut out: Vec<ProjectionStatus> = worker::status(&*self.store, &self.pool, LAG_CAP)
            .await
            .map_err(QueryError::from)?
            .into_iter()
            .map(|r| ProjectionStatus {
                projection: r.projection,
                partition: r.partition,
                checkpoint: r.checkpoint,
                lag: r.lag,
                state: r.state,
                last_error: r.last_error.map(|e| with_position(e, r.error_position)),
            })
            .collect();
        // A PostgreSQL projection gets its checkpoint row with its first applied batch, so
        // partitions it never had events in have none: show them at the start of the log.
        let head = self.store.head().await?;
        let names: BTreeSet<String> = out.iter().map(|r| r.projection.clone()).collect();
        for name in names {
            for p in 0..self.store.partitions() {
                if out.iter().any(|r| r.projection == name && r.partition == p) {
                    continue;
                }
                out.push(ProjectionStatus {
                    projection: name.clone(),
                    partition: p,
                    checkpoint: Position::new(p, LogId::ZERO).to_string(),
                    lag: self.lag(p, LogId::ZERO, &head).await,
                    state: "running".into(),
                    last_error: None,
                });
            }
        }
        out.extend(self.redis_status(&head).await?);
        out.sort_by(|a, b| {
            (a.projection.as_str(), a.partition).cmp(&(b.projection.as_str(), b.partition))
        });
        Ok(out)
    }

    async fn rebuild(&self, name: &str, from: Offset) -> Result<(), QueryError> {
        if name == "redis" {
            return self.rebuild_redis(from).await;
        }
        let Some((name, projection)) = pg_projection(name) else {
            return Err(QueryError::bad_request(
                "name",
                format!(
                    "unknown projection {name:?}; known projections: redis, {}",
                    PG_PROJECTIONS.join(", ")
                ),
            ));
        };
        let start = self.store.resolve(&from).await?;
        if !self
            .rebuilds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name)
        {
            return Err(QueryError::bad_request(
                "name",
                format!("a rebuild of {name} is already running"),
            ));
        }
        let guard = RebuildGuard {
            rebuilds: self.rebuilds.clone(),
            name,
        };
        let store = self.store.clone();
        let pool = self.pool.clone();
        tracing::info!(projection = name, from = %from, "rebuild started");
        tokio::spawn(async move {
            let _guard = guard;
            let begun = std::time::Instant::now();
            let no_progress = |_: u64, _: u64| {};
            match jobsource_projections::rebuild::rebuild(
                &*store,
                &pool,
                &*projection,
                Some(start),
                REBUILD_BATCH,
                &no_progress,
            )
            .await
            {
                Ok(n) => tracing::info!(
                    projection = name,
                    events = n,
                    events_per_s = jobsource_projections::rebuild::rate(n, begun),
                    "rebuild swapped in"
                ),
                Err(e) => tracing::error!(projection = name, error = %e,
                    "rebuild failed; the live model keeps serving (a new rebuild starts over)"),
            }
        });
        Ok(())
    }

    async fn queue_counts(&self) -> Result<super::QueueCounts, QueryError> {
        let keys = self.redis.keys();
        let mut conn = self.conn();
        let (pending, assigned, completed, failed): (u64, u64, u64, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(keys.key("jobs:pending"))
            .cmd("SCARD")
            .arg(keys.key("jobs:assigned"))
            .cmd("SCARD")
            .arg(keys.key("jobs:completed"))
            .cmd("SCARD")
            .arg(keys.key("jobs:failed"))
            .query_async(&mut conn)
            .await?;
        Ok(super::QueueCounts {
            pending,
            assigned,
            completed,
            failed,
        })
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

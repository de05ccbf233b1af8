//! The reader of the `postgres` read model: lists and stats of jobs and workflows, the
//! machine list, and how far the projection has applied the log, read from the tables
//! [`super::PostgresReadModel`] writes.
//!
//! Pages hold up to `limit` rows, oldest (smallest id) first, with the cursor of the next
//! page when more exist; views are built like the other read models' (times as RFC 3339
//! with milliseconds and `Z`).

use chrono::{DateTime, Utc};
use jobsource_eventstore::LogId;
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::view::{
    progress_percentage, timestamp, JobQuery, JobStats, JobView, MachineQuery, MachineView, Page,
    WorkerView, WorkflowQuery, WorkflowStats, WorkflowView,
};

const JOB_COLUMNS: &str = "id, type, status, priority, progress, stage, prompt, parameters, \
     requirements, webhook_url, workflow_id, step_index, depends_on, max_retries, attempt, \
     retry_count, worker_id, machine_id, result, error, created_at, updated_at, started_at, \
     completed_at, version";

const WORKFLOW_COLUMNS: &str = "id, name, description, status, total_steps, completed_steps, \
     job_ids, webhook_url, error, created_at, updated_at, completed_at, version";

/// Columns [`machine_from_row`] reads.
const MACHINE_COLUMNS: &str = "id, status, capabilities, gpu_memory, ip_address, workers, \
     current_jobs, last_heartbeat, registered_at, updated_at, version";

/// A page of jobs, oldest first, filtered (the `jobs` table).
pub async fn jobs(pool: &PgPool, q: &JobQuery) -> Result<Page<JobView>, ProjectionError> {
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
    let rows = sql.build().fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(job_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(items, q.limit, |j| j.id))
}

/// Counts of jobs created since `since` (all when `None`), by status and type.
pub async fn job_stats(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
) -> Result<JobStats, ProjectionError> {
    let mut sql = QueryBuilder::<Postgres>::new("SELECT status, type, count(*) FROM jobs");
    if let Some(since) = since {
        sql.push(" WHERE created_at >= ").push_bind(since);
    }
    sql.push(" GROUP BY status, type");
    let rows: Vec<(String, String, i64)> = sql.build_query_as().fetch_all(pool).await?;
    let mut stats = JobStats::default();
    for (status, job_type, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        stats.total += n;
        *stats.by_status.entry(status).or_default() += n;
        *stats.by_type.entry(job_type).or_default() += n;
    }
    Ok(stats)
}

/// A page of workflows (without steps), oldest first (the `workflows` table).
pub async fn workflows(
    pool: &PgPool,
    q: &WorkflowQuery,
) -> Result<Page<WorkflowView>, ProjectionError> {
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
    let rows = sql.build().fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(workflow_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(items, q.limit, |w| w.id))
}

/// Counts of workflows created since `since`, by status.
pub async fn workflow_stats(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
) -> Result<WorkflowStats, ProjectionError> {
    let mut sql = QueryBuilder::<Postgres>::new("SELECT status, count(*) FROM workflows");
    if let Some(since) = since {
        sql.push(" WHERE created_at >= ").push_bind(since);
    }
    sql.push(" GROUP BY status");
    let rows: Vec<(String, i64)> = sql.build_query_as().fetch_all(pool).await?;
    let mut stats = WorkflowStats::default();
    for (status, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        stats.total += n;
        *stats.by_status.entry(status).or_default() += n;
    }
    Ok(stats)
}

/// A page of machines in byte order of their ids, filtered by status.
pub async fn machines(
    pool: &PgPool,
    q: &MachineQuery,
) -> Result<Page<MachineView>, ProjectionError> {
    let mut sql =
        QueryBuilder::<Postgres>::new(format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE true"));
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
    let rows = sql.build().fetch_all(pool).await?;
    let mut items = rows
        .iter()
        .map(machine_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > q.limit {
        items.truncate(q.limit);
        items.last().map(|m| m.machine_id.clone())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// How far projection `projection` has applied partition `partition` (its row of
/// `projection_checkpoints`; the log's start when it has none).
pub async fn applied(
    pool: &PgPool,
    projection: &str,
    partition: u32,
) -> Result<LogId, ProjectionError> {
    Ok(match i32::try_from(partition) {
        Ok(partition) => {
            let row: Option<(i64, i64)> = sqlx::query_as(
                "SELECT log_ms, log_seq FROM projection_checkpoints \
                 WHERE projection = $1 AND partition = $2",
            )
            .bind(projection)
            .bind(partition)
            .fetch_optional(pool)
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
    })
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

/// An `integer` column converted to the view's type.
fn int<T: TryFrom<i32>>(row: &PgRow, column: &str) -> Result<T, ProjectionError> {
    let v: i32 = row.try_get(column)?;
    T::try_from(v).map_err(|_| out_of_range(column, v))
}

fn out_of_range(column: &str, v: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Corrupt(format!("postgres: {column} = {v} out of range"))
}

fn opt_int<T: TryFrom<i32>>(row: &PgRow, column: &str) -> Result<Option<T>, ProjectionError> {
    row.try_get::<Option<i32>, _>(column)?
        .map(|v| T::try_from(v).map_err(|_| out_of_range(column, v)))
        .transpose()
}

/// The `version` (`bigint`) column.
fn version(row: &PgRow) -> Result<u64, ProjectionError> {
    let v: i64 = row.try_get("version")?;
    u64::try_from(v).map_err(|_| out_of_range("version", v))
}

fn time(row: &PgRow, column: &str) -> Result<Option<String>, ProjectionError> {
    Ok(row
        .try_get::<Option<DateTime<Utc>>, _>(column)?
        .map(timestamp))
}

fn job_from_row(row: &PgRow) -> Result<JobView, ProjectionError> {
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

fn workflow_from_row(row: &PgRow) -> Result<WorkflowView, ProjectionError> {
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

/// The view of a `machines` row.
fn machine_from_row(row: &PgRow) -> Result<MachineView, ProjectionError> {
    let workers: serde_json::Value = row.try_get("workers")?;
    let workers: Vec<WorkerView> = serde_json::from_value(workers)
        .map_err(|e| ProjectionError::Corrupt(format!("machines.workers: {e}")))?;
    let time = |c: &str| -> Result<Option<String>, ProjectionError> {
        Ok(row.try_get::<Option<DateTime<Utc>>, _>(c)?.map(timestamp))
    };
    Ok(MachineView {
        machine_id: row.try_get("id")?,
        status: row.try_get("status")?,
        capabilities: row.try_get("capabilities")?,
        gpu_memory: row.try_get("gpu_memory")?,
        ip_address: row.try_get("ip_address")?,
        last_heartbeat_at: time("last_heartbeat")?,
        workers,
        current_jobs: row.try_get("current_jobs")?,
        version: u64::try_from(row.try_get::<i64, _>("version")?).unwrap_or(0),
        registered_at: time("registered_at")?,
        updated_at: time("updated_at")?,
    })
}

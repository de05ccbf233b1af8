//! Job rows folded per batch: every event of one job in a batch becomes one row write.
//!
//! A batch is decoded, grouped by job, and each job's events are folded onto its row: the
//! row already stored (one `SELECT ... WHERE id = ANY` for the jobs the batch does not
//! create) or a fresh one for a `job_submitted`. Only events above the row's version are
//! applied, so a re-delivered event changes nothing. All changed rows are then written
//! with one `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT (id) DO UPDATE ... WHERE
//! jobs.version < EXCLUDED.version`: the same guard, enforced again by the database.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jobsource_domain::job::JobEvent;
use serde_json::{json, Value};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::error::ProjectionError;

/// One `jobs` row.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobRow {
    id: Uuid,
    job_type: String,
    status: String,
    priority: i32,
    progress: i32,
    stage: Option<String>,
    prompt: Option<String>,
    parameters: Value,
    requirements: Option<Value>,
    webhook_url: Option<String>,
    workflow_id: Option<Uuid>,
    step_index: Option<i32>,
    depends_on: Vec<Uuid>,
    max_retries: i32,
    attempt: i32,
    retry_count: i32,
    worker_id: Option<String>,
    machine_id: Option<String>,
    result: Option<Value>,
    error: Option<Value>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    version: i64,
    position: String,
}

impl JobRow {
    /// Applies one event (the caller checked `version > self.version`).
    fn apply(&mut self, event: &JobEvent, version: i64, position: &str, at: DateTime<Utc>) {
        match event {
            JobEvent::JobSubmitted(s) => {
                *self = JobRow {
                    id: s.job_id,
                    job_type: s.job_type.clone(),
                    status: s.status.as_str().to_owned(),
                    priority: i32::from(s.priority),
                    prompt: s.prompt.clone(),
                    parameters: Value::Object(s.parameters.clone()),
                    requirements: Some(json!(s.requirements)),
                    webhook_url: s.webhook_url.clone(),
                    workflow_id: s.workflow_id,
                    step_index: s.step_index.map(|i| i as i32),
                    depends_on: s.depends_on.clone(),
                    max_retries: s.max_retries as i32,
                    created_at: Some(at),
                    ..JobRow::default()
                };
            }
            JobEvent::JobReleased { .. } => self.status = "pending".into(),
            JobEvent::JobAssigned {
                worker_id,
                machine_id,
                attempt,
                ..
            } => {
                self.status = "assigned".into();
                self.worker_id = Some(worker_id.clone());
                self.machine_id = Some(machine_id.clone());
                self.attempt = *attempt as i32;
                self.progress = 0;
                self.stage = None;
                self.started_at.get_or_insert(at);
            }
            JobEvent::JobProgress {
                progress, stage, ..
            } => {
                self.status = "running".into();
                self.progress = i32::from(*progress);
                if stage.is_some() {
                    self.stage = stage.clone();
                }
            }
            JobEvent::JobCompleted { result, .. } => {
                self.status = "completed".into();
                self.progress = 100;
                self.result = Some(result.clone());
                self.completed_at = Some(at);
            }
            JobEvent::JobFailed {
                error,
                retry_count,
                will_retry,
                ..
            } => {
                self.error = Some(json!(error));
                self.retry_count = *retry_count as i32;
                if *will_retry {
                    self.status = "pending".into();
                    self.progress = 0;
                    self.stage = None;
                } else {
                    self.status = "failed".into();
                    self.completed_at = Some(at);
                }
            }
            JobEvent::JobCancelled { .. } => {
                self.status = "cancelled".into();
                self.completed_at = Some(at);
            }
            // The failed attempt is counted by the `job_failed` that follows it.
            JobEvent::JobLeaseExpired { .. } => {}
        }
        self.updated_at = Some(at);
        self.version = version;
        self.position = position.to_owned();
    }
}

/// One decoded job event of a batch.
pub(crate) struct JobChange {
    pub(crate) event: JobEvent,
    pub(crate) version: i64,
    pub(crate) position: String,
    pub(crate) at: DateTime<Utc>,
}

const COLUMNS: &str = "id, type, status, priority, progress, stage, prompt, parameters, \
    requirements, webhook_url, workflow_id, step_index, depends_on, max_retries, attempt, \
    retry_count, worker_id, machine_id, result, error, created_at, updated_at, started_at, \
    completed_at, version, position";

/// Folds and writes the job events of one batch (in log order).
pub(crate) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    changes: Vec<JobChange>,
) -> Result<(), ProjectionError> {
    if changes.is_empty() {
        return Ok(());
    }
    // Group per job, keeping each job's events in order.
    let mut order: Vec<Uuid> = Vec::new();
    let mut by_job: HashMap<Uuid, Vec<JobChange>> = HashMap::new();
    for c in changes {
        let id = c.event.job_id();
        by_job
            .entry(id)
            .or_insert_with(|| {
                order.push(id);
                Vec::new()
            })
            .push(c);
    }
    // Rows to start from: jobs whose batch does not begin with their submission.
    let to_load: Vec<Uuid> = order
        .iter()
        .filter(|id| {
            by_job[*id]
                .first()
                .is_some_and(|c| !matches!(c.event, JobEvent::JobSubmitted(_)))
        })
        .copied()
        .collect();
    let mut rows: HashMap<Uuid, JobRow> = if to_load.is_empty() {
        HashMap::new()
    } else {
        load(tx, &to_load).await?
    };
    let mut changed: Vec<JobRow> = Vec::with_capacity(order.len());
    for id in order {
        let Some(events) = by_job.remove(&id) else {
            continue;
        };
        let mut row = rows.remove(&id);
        let mut touched = false;
        for c in events {
            match (&mut row, &c.event) {
                (None, JobEvent::JobSubmitted(_)) => {
                    let mut fresh = JobRow::default();
                    fresh.apply(&c.event, c.version, &c.position, c.at);
                    row = Some(fresh);
                    touched = true;
                }
                // An update of a job this model never saw (started from a later offset):
                // nothing to update, as with a guarded UPDATE matching no row.
                (None, _) => {}
                (Some(r), _) if c.version > r.version => {
                    r.apply(&c.event, c.version, &c.position, c.at);
                    touched = true;
                }
                (Some(_), _) => {}
            }
        }
        if let (true, Some(r)) = (touched, row) {
            changed.push(r);
        }
    }
    write(tx, &changed).await
}

async fn load(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, JobRow>, ProjectionError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ANY($1)");
    let found = sqlx::query(&sql).bind(ids).fetch_all(&mut **tx).await?;
    let mut rows = HashMap::with_capacity(found.len());
    for r in found {
        let row = JobRow {
            id: r.try_get("id")?,
            job_type: r.try_get("type")?,
            status: r.try_get("status")?,
            priority: r.try_get("priority")?,
            progress: r.try_get("progress")?,
            stage: r.try_get("stage")?,
            prompt: r.try_get("prompt")?,
            parameters: r.try_get("parameters")?,
            requirements: r.try_get("requirements")?,
            webhook_url: r.try_get("webhook_url")?,
            workflow_id: r.try_get("workflow_id")?,
            step_index: r.try_get("step_index")?,
            depends_on: r.try_get("depends_on")?,
            max_retries: r.try_get("max_retries")?,
            attempt: r.try_get("attempt")?,
            retry_count: r.try_get("retry_count")?,
            worker_id: r.try_get("worker_id")?,
            machine_id: r.try_get("machine_id")?,
            result: r.try_get("result")?,
            error: r.try_get("error")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            started_at: r.try_get("started_at")?,
            completed_at: r.try_get("completed_at")?,
            version: r.try_get("version")?,
            position: r.try_get("position")?,
        };
        rows.insert(row.id, row);
    }
    Ok(rows)
}

/// A PostgreSQL array literal of uuids (`{a,b}`): UNNEST cannot take an array of arrays
/// of different lengths, so each row's `depends_on` travels as text and is cast back.
fn uuid_array_literal(ids: &[Uuid]) -> String {
    let mut s = String::with_capacity(2 + ids.len() * 37);
    s.push('{');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s.push('}');
    s
}

async fn write(tx: &mut Transaction<'_, Postgres>, rows: &[JobRow]) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
        };
    }
    let depends_on: Vec<String> = rows
        .iter()
        .map(|r| uuid_array_literal(&r.depends_on))
        .collect();
    let updates = COLUMNS
        .split(", ")
        .map(str::trim)
        .filter(|c| *c != "id" && *c != "created_at")
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO jobs ({COLUMNS}) \
         SELECT id, type, status, priority, progress, stage, prompt, parameters, requirements, \
           webhook_url, workflow_id, step_index, depends_on::uuid[], max_retries, attempt, \
           retry_count, worker_id, machine_id, result, error, created_at, updated_at, \
           started_at, completed_at, version, position \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::text[], \
           $7::text[], $8::jsonb[], $9::jsonb[], $10::text[], $11::uuid[], $12::int4[], \
           $13::text[], $14::int4[], $15::int4[], $16::int4[], $17::text[], $18::text[], \
           $19::jsonb[], $20::jsonb[], $21::timestamptz[], $22::timestamptz[], \
           $23::timestamptz[], $24::timestamptz[], $25::int8[], $26::text[]) \
           AS t(id, type, status, priority, progress, stage, prompt, parameters, requirements, \
           webhook_url, workflow_id, step_index, depends_on, max_retries, attempt, retry_count, \
           worker_id, machine_id, result, error, created_at, updated_at, started_at, \
           completed_at, version, position) \
         ON CONFLICT (id) DO UPDATE SET {updates} WHERE jobs.version < EXCLUDED.version"
    );
    sqlx::query(&sql)
        .bind(column!(id))
        .bind(column!(job_type))
        .bind(column!(status))
        .bind(column!(priority))
        .bind(column!(progress))
        .bind(column!(stage))
        .bind(column!(prompt))
        .bind(column!(parameters))
        .bind(column!(requirements))
        .bind(column!(webhook_url))
        .bind(column!(workflow_id))
        .bind(column!(step_index))
        .bind(depends_on)
        .bind(column!(max_retries))
        .bind(column!(attempt))
        .bind(column!(retry_count))
        .bind(column!(worker_id))
        .bind(column!(machine_id))
        .bind(column!(result))
        .bind(column!(error))
        .bind(column!(created_at))
        .bind(column!(updated_at))
        .bind(column!(started_at))
        .bind(column!(completed_at))
        .bind(column!(version))
        .bind(column!(position))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

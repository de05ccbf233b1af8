//! The `postgres` projection: `jobs`, `workflows`, `workflow_steps` and `machines` rows.
//!
//! Jobs (the bulk of the log) are folded per batch: all events of one job in a batch become
//! one row, and all rows one `UNNEST` upsert ([`jobs`]); machines are folded per batch
//! the same way ([`machines`]). Workflow events (a few per
//! workflow) are one guarded statement each: inserts use `ON CONFLICT DO NOTHING`, updates
//! carry `WHERE version < <event version>`. Either way an event already applied (a
//! re-delivery, a replay from an earlier offset) changes nothing, and every write shares
//! the batch's transaction with the checkpoint.

mod jobs;
mod machines;
pub mod reader;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsource_domain::job::JobEvent;
use jobsource_domain::machine::MachineEvent;
use jobsource_domain::workflow::WorkflowEvent;
use jobsource_eventstore::typed::from_envelope;
use jobsource_eventstore::RecordedEvent;
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use crate::error::ProjectionError;
use crate::runtime::PgProjection;

/// The PostgreSQL read model projection.
#[derive(Debug, Clone, Default)]
pub struct PostgresReadModel;

#[async_trait]
impl PgProjection for PostgresReadModel {
    fn name(&self) -> &str {
        "postgres"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut job_changes = Vec::with_capacity(events.len());
        let mut machine_changes = Vec::new();
        for e in events {
            let env = &e.envelope;
            let bad = |err: jobsource_eventstore::DecodeError| ProjectionError::Apply {
                position: e.position.to_string(),
                message: err.to_string(),
            };
            if env.stream.starts_with("job-") {
                job_changes.push(jobs::JobChange {
                    event: from_envelope::<JobEvent>(env).map_err(bad)?,
                    version: env.version as i64,
                    position: e.position.to_string(),
                    at: env.occurred_at,
                });
            } else if env.stream.starts_with("machine-") {
                machine_changes.push(machines::MachineChange {
                    event: from_envelope::<MachineEvent>(env).map_err(bad)?,
                    version: env.version as i64,
                    position: e.position.to_string(),
                    at: env.occurred_at,
                });
            }
        }
        // Jobs and workflows are independent rows, so jobs can go first as one write.
        jobs::apply(tx, job_changes).await?;
        machines::apply(tx, machine_changes).await?;
        for e in events {
            let env = &e.envelope;
            if !env.stream.starts_with("workflow-") {
                continue;
            }
            let at = Meta {
                version: env.version as i64,
                position: e.position.to_string(),
                time: env.occurred_at,
            };
            let event =
                from_envelope::<WorkflowEvent>(env).map_err(|err| ProjectionError::Apply {
                    position: e.position.to_string(),
                    message: err.to_string(),
                })?;
            apply_workflow(tx, &event, &at).await?;
        }
        Ok(())
    }
}

/// Where an event sits: the row guard and bookkeeping values.
struct Meta {
    version: i64,
    position: String,
    time: DateTime<Utc>,
}

/// Runs `UPDATE jobs SET <set>, updated_at, version, position WHERE id AND version < v`.
/// `$1` = id, `$2` = version, `$3` = position, `$4` = time; extra binds start at `$5`.
macro_rules! guarded_update {
    ($tx:expr, $table:literal, $set:literal, $id:expr, $at:expr $(, $bind:expr)*) => {
        sqlx::query(concat!(
            "UPDATE ", $table, " SET ", $set,
            ", updated_at = $4, version = $2, position = $3 WHERE id = $1 AND version < $2"
        ))
        .bind($id)
        .bind($at.version)
        .bind(&$at.position)
        .bind($at.time)
        $(.bind($bind))*
        .execute(&mut **$tx)
        .await
    };
}

/// Updates one step row of a workflow, guarded by the workflow stream's version.
async fn update_step(
    tx: &mut Transaction<'_, Postgres>,
    workflow_id: uuid::Uuid,
    step_index: u32,
    set: &str,
    at: &Meta,
    value: Option<&Value>,
) -> Result<(), ProjectionError> {
    let sql = format!(
        "UPDATE workflow_steps SET {set}, version = $3, position = $4 \
         WHERE workflow_id = $1 AND step_index = $2 AND version < $3"
    );
    sqlx::query(&sql)
        .bind(workflow_id)
        .bind(step_index as i32)
        .bind(at.version)
        .bind(&at.position)
        .bind(at.time)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn apply_workflow(
    tx: &mut Transaction<'_, Postgres>,
    event: &WorkflowEvent,
    at: &Meta,
) -> Result<(), ProjectionError> {
    match event {
        WorkflowEvent::WorkflowCreated(c) => {
            let inserted = sqlx::query(
                "INSERT INTO workflows (id, name, description, status, total_steps, job_ids, \
                 webhook_url, created_at, updated_at, version, position) \
                 VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $7, $8, $9) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(c.workflow_id)
            .bind(&c.name)
            .bind(&c.description)
            .bind(c.total_steps as i32)
            .bind(&c.job_ids)
            .bind(&c.webhook_url)
            .bind(at.time)
            .bind(at.version)
            .bind(&at.position)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                for (i, step) in c.steps.iter().enumerate() {
                    let deps: Vec<i32> = step.depends_on.iter().map(|d| *d as i32).collect();
                    sqlx::query(
                        "INSERT INTO workflow_steps (workflow_id, step_index, job_id, type, \
                         depends_on, status, version, position) \
                         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) ON CONFLICT DO NOTHING",
                    )
                    .bind(c.workflow_id)
                    .bind(i as i32)
                    .bind(c.job_ids.get(i).copied().unwrap_or_default())
                    .bind(&step.job_type)
                    .bind(&deps)
                    .bind(at.version)
                    .bind(&at.position)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        WorkflowEvent::WorkflowStepStarted {
            workflow_id,
            step_index,
            ..
        } => {
            update_step(
                tx,
                *workflow_id,
                *step_index,
                "status = 'started', started_at = coalesce(started_at, $5), \
                 result = coalesce($6, result)",
                at,
                None,
            )
            .await?;
            guarded_update!(
                tx,
                "workflows",
                "status = CASE WHEN status = 'pending' THEN 'running' ELSE status END",
                *workflow_id,
                at
            )?;
        }
        WorkflowEvent::WorkflowStepCompleted {
            workflow_id,
            step_index,
            result,
            completed_steps,
            ..
        } => {
            update_step(
                tx,
                *workflow_id,
                *step_index,
                "status = 'completed', completed_at = $5, result = $6",
                at,
                Some(result),
            )
            .await?;
            guarded_update!(
                tx,
                "workflows",
                "completed_steps = $5",
                *workflow_id,
                at,
                *completed_steps as i32
            )?;
        }
        WorkflowEvent::WorkflowCompleted { workflow_id, .. } => {
            guarded_update!(
                tx,
                "workflows",
                "status = 'completed', completed_at = $4",
                *workflow_id,
                at
            )?;
        }
        WorkflowEvent::WorkflowStepFailed {
            workflow_id,
            step_index,
            error,
            ..
        } => {
            update_step(
                tx,
                *workflow_id,
                *step_index,
                "status = 'failed', completed_at = $5, error = $6",
                at,
                Some(error),
            )
            .await?;
            guarded_update!(tx, "workflows", "error = $5", *workflow_id, at, error)?;
        }
        WorkflowEvent::WorkflowFailed { workflow_id, .. } => {
            guarded_update!(
                tx,
                "workflows",
                "status = 'failed', completed_at = $4",
                *workflow_id,
                at
            )?;
        }
        WorkflowEvent::WorkflowCancelled { workflow_id, .. } => {
            guarded_update!(
                tx,
                "workflows",
                "status = 'cancelled', completed_at = $4",
                *workflow_id,
                at
            )?;
        }
    }
    Ok(())
}

//! `machines` rows, folded per batch like jobs.
//!
//! A batch's machine events are grouped by machine and folded onto the stored row (one
//! `SELECT ... WHERE id = ANY` for machines the batch does not register) with the domain's
//! own fold ([`Machine::apply`]), applying only events above the row's version; each changed
//! row is then written with `INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE
//! machines.version < EXCLUDED.version`, the same guard enforced by the database. A worker
//! change needs the other workers to write the `workers` column, which is why the row is
//! folded rather than updated column by column.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jobsource_domain::machine::{Machine, MachineEvent, MachineStatus, WorkerState, WorkerStatus};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::error::ProjectionError;

/// One decoded machine event of a batch.
pub(crate) struct MachineChange {
    pub(crate) event: MachineEvent,
    pub(crate) version: i64,
    pub(crate) position: String,
    pub(crate) at: DateTime<Utc>,
}

/// One worker in the `workers` column.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerJson {
    worker_id: String,
    status: String,
    current_job_id: Option<Uuid>,
}

/// One `machines` row: the folded machine and its bookkeeping.
struct MachineRow {
    machine: Machine,
    last_heartbeat: Option<DateTime<Utc>>,
    registered_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    position: String,
}

impl MachineRow {
    fn apply(&mut self, c: &MachineChange) {
        self.machine.apply(&c.event);
        // The row's version is the stream's (a row loaded from the table starts there).
        self.machine.version = u64::try_from(c.version).unwrap_or(0);
        self.registered_at.get_or_insert(c.at);
        self.updated_at = Some(c.at);
        if c.event.is_from_machine() {
            self.last_heartbeat = Some(c.at);
        }
        self.position = c.position.clone();
    }
}

fn parse_status(id: &str, s: &str) -> Result<MachineStatus, ProjectionError> {
    MachineStatus::parse("status", s).map_err(|e| ProjectionError::Apply {
        position: format!("machines row {id}"),
        message: e.to_string(),
    })
}

fn row_error(id: &str, message: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Apply {
        position: format!("machines row {id}"),
        message: message.to_string(),
    }
}

const COLUMNS: &str = "id, status, capabilities, gpu_memory, ip_address, workers, \
    current_jobs, last_heartbeat, registered_at, updated_at, version, position";

async fn load(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[String],
) -> Result<HashMap<String, MachineRow>, ProjectionError> {
    let sql = format!("SELECT {COLUMNS} FROM machines WHERE id = ANY($1)");
    let found = sqlx::query(&sql).bind(ids).fetch_all(&mut **tx).await?;
    let mut rows = HashMap::with_capacity(found.len());
    for r in found {
        let id: String = r.try_get("id")?;
        let status: String = r.try_get("status")?;
        let workers: serde_json::Value = r.try_get("workers")?;
        let workers: Vec<WorkerJson> =
            serde_json::from_value(workers).map_err(|e| row_error(&id, e))?;
        let mut by_id = std::collections::BTreeMap::new();
        for w in workers {
            let status =
                WorkerStatus::parse("workers.status", &w.status).map_err(|e| row_error(&id, e))?;
            by_id.insert(
                w.worker_id.clone(),
                WorkerState {
                    worker_id: w.worker_id,
                    status,
                    current_job_id: w.current_job_id,
                },
            );
        }
        let version: i64 = r.try_get("version")?;
        let machine = Machine {
            id: id.clone(),
            status: Some(parse_status(&id, &status)?),
            capabilities: r.try_get("capabilities")?,
            gpu_memory: r.try_get("gpu_memory")?,
            ip_address: r.try_get("ip_address")?,
            workers: by_id,
            version: u64::try_from(version).unwrap_or(0),
        };
        rows.insert(
            id,
            MachineRow {
                machine,
                last_heartbeat: r.try_get("last_heartbeat")?,
                registered_at: r.try_get("registered_at")?,
                updated_at: r.try_get("updated_at")?,
                position: r.try_get("position")?,
            },
        );
    }
    Ok(rows)
}

/// Folds and writes the machine events of one batch (in log order).
pub(crate) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    changes: Vec<MachineChange>,
) -> Result<(), ProjectionError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut order: Vec<String> = Vec::new();
    let mut by_machine: HashMap<String, Vec<MachineChange>> = HashMap::new();
    for c in changes {
        let id = c.event.machine_id().to_owned();
        by_machine
            .entry(id.clone())
            .or_insert_with(|| {
                order.push(id);
                Vec::new()
            })
            .push(c);
    }
    let mut rows = load(tx, &order).await?;
    for id in order {
        let Some(events) = by_machine.remove(&id) else {
            continue;
        };
        let mut row = rows.remove(&id);
        let mut touched = false;
        for c in events {
            let applied = row
                .as_ref()
                .map_or(0, |r| i64::try_from(r.machine.version).unwrap_or(i64::MAX));
            if c.version <= applied {
                continue;
            }
            match (&mut row, &c.event) {
                (None, MachineEvent::MachineRegistered { .. }) => {
                    let mut fresh = MachineRow {
                        machine: Machine::default(),
                        last_heartbeat: None,
                        registered_at: None,
                        updated_at: None,
                        position: String::new(),
                    };
                    fresh.apply(&c);
                    row = Some(fresh);
                    touched = true;
                }
                // A change of a machine this model never saw registered (started from a
                // later offset): nothing to update.
                (None, _) => {}
                (Some(r), _) => {
                    r.apply(&c);
                    touched = true;
                }
            }
        }
        if let (true, Some(r)) = (touched, row) {
            write(tx, &r).await?;
        }
    }
    Ok(())
}

async fn write(
    tx: &mut Transaction<'_, Postgres>,
    row: &MachineRow,
) -> Result<(), ProjectionError> {
    let m = &row.machine;
    let workers: Vec<WorkerJson> = m
        .workers
        .values()
        .map(|w| WorkerJson {
            worker_id: w.worker_id.clone(),
            status: w.status.as_str().to_owned(),
            current_job_id: w.current_job_id,
        })
        .collect();
    let workers = serde_json::to_value(workers).map_err(|e| row_error(&m.id, e))?;
    let (Some(registered_at), Some(updated_at)) = (row.registered_at, row.updated_at) else {
        return Err(row_error(
            &m.id,
            "a machine row needs its registration time",
        ));
    };
    sqlx::query(
        "INSERT INTO machines (id, status, capabilities, gpu_memory, ip_address, workers, \
         current_jobs, last_heartbeat, registered_at, updated_at, version, position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
           capabilities = EXCLUDED.capabilities, gpu_memory = EXCLUDED.gpu_memory, \
           ip_address = EXCLUDED.ip_address, workers = EXCLUDED.workers, \
           current_jobs = EXCLUDED.current_jobs, last_heartbeat = EXCLUDED.last_heartbeat, \
           updated_at = EXCLUDED.updated_at, version = EXCLUDED.version, \
           position = EXCLUDED.position \
         WHERE machines.version < EXCLUDED.version",
    )
    .bind(&m.id)
    .bind(m.status.map_or("online", MachineStatus::as_str))
    .bind(&m.capabilities)
    .bind(m.gpu_memory)
    .bind(&m.ip_address)
    .bind(workers)
    .bind(m.current_jobs())
    .bind(row.last_heartbeat)
    .bind(registered_at)
    .bind(updated_at)
    .bind(i64::try_from(m.version).unwrap_or(i64::MAX))
    .bind(&row.position)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

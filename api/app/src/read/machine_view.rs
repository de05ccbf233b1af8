//! What machine queries answer, built the same way by every read model: the embedded one
//! (folding the domain state), the `redis` projection's hash, the `postgres` projection's
//! row, and the stream itself when the read model has not seen a machine yet.
//!
//! `workers` are sorted by worker id and `current_jobs` (the jobs the workers report
//! working on) by job id in every model. `last_heartbeat_at` as built here is the time of
//! the last event the machine caused; the HTTP layer replaces it with the last-seen time
//! of the heartbeat store ([`crate::service::machines::seen`]), which also moves on
//! heartbeats that change nothing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jobsource_domain::machine::{Machine, MachineEvent};
use jobsource_eventstore::typed::from_envelope;
use jobsource_eventstore::Envelope;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use super::view::timestamp;
use super::QueryError;

/// One worker of a machine, as it last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Worker id.
    pub worker_id: String,
    /// `idle|busy|offline`.
    pub status: String,
    /// The job it works on.
    pub current_job_id: Option<Uuid>,
}

/// A machine as the read models show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineView {
    /// Machine id.
    pub machine_id: String,
    /// `online|busy|offline|error`.
    pub status: String,
    /// Declared capabilities.
    pub capabilities: Vec<String>,
    /// GPU memory in GB.
    pub gpu_memory: Option<f64>,
    /// IP address.
    pub ip_address: Option<String>,
    /// Last registration or heartbeat (RFC 3339).
    pub last_heartbeat_at: Option<String>,
    /// Workers by id.
    pub workers: Vec<WorkerView>,
    /// The jobs its workers report working on (sorted).
    pub current_jobs: Vec<Uuid>,
    /// Stream version this view reflects.
    pub version: u64,
    /// First registration.
    pub registered_at: Option<String>,
    /// Time of the last event.
    pub updated_at: Option<String>,
}

/// Filters of `GET /v1/machines`.
#[derive(Debug, Clone, Default)]
pub struct MachineQuery {
    /// Status filter.
    pub status: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Machine ids after this one (the previous page's `next_cursor`).
    pub after: Option<String>,
}

/// The times a machine view shows, from the envelopes of its events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTimes {
    /// First registration.
    pub registered_at: Option<DateTime<Utc>>,
    /// Last event.
    pub updated_at: Option<DateTime<Utc>>,
    /// Last event the machine caused (not the timeout).
    pub last_heartbeat: Option<DateTime<Utc>>,
}

impl MachineTimes {
    /// Records an event that happened at `at`.
    pub fn apply(&mut self, event: &MachineEvent, at: DateTime<Utc>) {
        self.registered_at.get_or_insert(at);
        self.updated_at = Some(at);
        if event.is_from_machine() {
            self.last_heartbeat = Some(at);
        }
    }
}

/// A machine with its times: what the embedded model keeps per machine.
#[derive(Debug, Clone, Default)]
pub struct MachineEntry {
    /// The folded state.
    pub state: Machine,
    /// Its times.
    pub times: MachineTimes,
}

impl MachineEntry {
    /// Applies an event of version `version` at `at`, unless already applied.
    pub fn apply(&mut self, event: &MachineEvent, version: u64, at: DateTime<Utc>) {
        if version <= self.state.version {
            return;
        }
        self.state.apply(event);
        self.times.apply(event, at);
    }

    /// The view (`None` before registration).
    pub fn view(&self) -> Option<MachineView> {
        MachineView::from_state(&self.state, &self.times)
    }
}

impl MachineView {
    /// The view of a folded machine (`None` before registration).
    pub fn from_state(m: &Machine, times: &MachineTimes) -> Option<MachineView> {
        let status = m.status?;
        Some(MachineView {
            machine_id: m.id.clone(),
            status: status.as_str().to_owned(),
            capabilities: m.capabilities.clone(),
            gpu_memory: m.gpu_memory,
            ip_address: m.ip_address.clone(),
            last_heartbeat_at: times.last_heartbeat.map(timestamp),
            workers: m
                .workers
                .values()
                .map(|w| WorkerView {
                    worker_id: w.worker_id.clone(),
                    status: w.status.as_str().to_owned(),
                    current_job_id: w.current_job_id,
                })
                .collect(),
            current_jobs: m.current_jobs(),
            version: m.version,
            registered_at: times.registered_at.map(timestamp),
            updated_at: times.updated_at.map(timestamp),
        })
    }

    /// Folds a machine's history (`None` when it holds no registration). Envelopes that do
    /// not decode as machine events are skipped.
    pub fn fold<'a>(history: impl IntoIterator<Item = &'a Envelope>) -> Option<MachineView> {
        let mut entry = MachineEntry::default();
        for env in history {
            if let Ok(event) = from_envelope::<MachineEvent>(env) {
                entry.apply(&event, env.version, env.occurred_at);
            }
        }
        entry.view()
    }

    /// Shows `ms` (milliseconds since the epoch) as the last heartbeat, when known.
    pub fn with_last_seen(mut self, ms: Option<i64>) -> MachineView {
        if let Some(t) = ms.and_then(DateTime::<Utc>::from_timestamp_millis) {
            self.last_heartbeat_at = Some(timestamp(t));
        }
        self
    }

    /// The view of a `redis` projection hash (`None` when the machine is not in it).
    pub fn from_hash(
        id: &str,
        map: &HashMap<String, String>,
    ) -> Result<Option<MachineView>, QueryError> {
        let field = |f: &str| map.get(f).map(String::as_str).filter(|s| !s.is_empty());
        let bad = |f: &str, e: &dyn std::fmt::Display| {
            QueryError::Internal(format!("redis read model: machine {id}: field {f}: {e}"))
        };
        let json = |f: &str| -> Result<Option<serde_json::Value>, QueryError> {
            field(f)
                .map(|s| serde_json::from_str(s).map_err(|e| bad(f, &e)))
                .transpose()
        };
        let Some(status) = field("status") else {
            return Ok(None);
        };
        let list = |f: &str| -> Result<serde_json::Value, QueryError> {
            // The batch script writes an empty list as `[]`; anything else empty is `{}`.
            Ok(match json(f)? {
                Some(serde_json::Value::Object(o)) if o.is_empty() => serde_json::json!([]),
                Some(v) => v,
                None => serde_json::json!([]),
            })
        };
        fn parse<T: serde::de::DeserializeOwned>(
            id: &str,
            f: &str,
            v: serde_json::Value,
        ) -> Result<T, QueryError> {
            serde_json::from_value(v).map_err(|e| {
                QueryError::Internal(format!("redis read model: machine {id}: field {f}: {e}"))
            })
        }
        Ok(Some(MachineView {
            machine_id: field("machine_id").unwrap_or(id).to_owned(),
            status: status.to_owned(),
            capabilities: parse(id, "capabilities", list("capabilities")?)?,
            gpu_memory: field("gpu_memory")
                .map(|g| g.parse::<f64>().map_err(|e| bad("gpu_memory", &e)))
                .transpose()?,
            ip_address: field("ip_address").map(str::to_owned),
            last_heartbeat_at: field("last_heartbeat").map(str::to_owned),
            workers: parse(id, "workers", list("workers")?)?,
            current_jobs: parse(id, "current_jobs", list("current_jobs")?)?,
            version: field("version")
                .map(|v| v.parse::<u64>().map_err(|e| bad("version", &e)))
                .transpose()?
                .unwrap_or(0),
            registered_at: field("created_at").map(str::to_owned),
            updated_at: field("updated_at").map(str::to_owned),
        }))
    }

    /// The view of a `machines` row of the `postgres` projection.
    pub fn from_row(row: &PgRow) -> Result<MachineView, QueryError> {
        let workers: serde_json::Value = row.try_get("workers")?;
        let workers: Vec<WorkerView> = serde_json::from_value(workers)
            .map_err(|e| QueryError::Internal(format!("machines.workers: {e}")))?;
        let time = |c: &str| -> Result<Option<String>, QueryError> {
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
}

/// Columns [`MachineView::from_row`] reads.
pub const MACHINE_COLUMNS: &str = "id, status, capabilities, gpu_memory, ip_address, workers, \
     current_jobs, last_heartbeat, registered_at, updated_at, version";

#[cfg(test)]
mod tests {
    use super::*;
    use jobsource_domain::machine::{MachineStatus, WorkerStatus};

    #[test]
    fn a_hash_reads_as_the_folded_view() {
        let at: DateTime<Utc> = "2025-01-02T03:04:05.678Z".parse().unwrap();
        let job = Uuid::now_v7();
        let mut entry = MachineEntry::default();
        entry.apply(
            &MachineEvent::MachineRegistered {
                machine_id: "m1".into(),
                capabilities: vec!["upscale".into()],
                gpu_memory: Some(24.5),
                ip_address: None,
                status: MachineStatus::Online,
            },
            1,
            at,
        );
        entry.apply(
            &MachineEvent::WorkerStatusChanged {
                worker_id: "w1".into(),
                machine_id: "m1".into(),
                status: WorkerStatus::Busy,
                current_job_id: Some(job),
            },
            2,
            at,
        );
        // Applied twice: the second time changes nothing.
        entry.apply(
            &MachineEvent::WorkerStatusChanged {
                worker_id: "w1".into(),
                machine_id: "m1".into(),
                status: WorkerStatus::Idle,
                current_job_id: None,
            },
            2,
            at,
        );
        let view = entry.view().unwrap();
        let t = timestamp(at);
        let hash: HashMap<String, String> = [
            ("machine_id", "m1".to_owned()),
            ("id", "m1".into()),
            ("status", "online".into()),
            ("capabilities", r#"["upscale"]"#.into()),
            ("gpu_memory", "24.5".into()),
            ("ip_address", "".into()),
            (
                "workers",
                format!(r#"[{{"worker_id":"w1","status":"busy","current_job_id":"{job}"}}]"#),
            ),
            ("current_jobs", format!(r#"["{job}"]"#)),
            ("created_at", t.clone()),
            ("updated_at", t.clone()),
            ("last_heartbeat", t),
            ("version", "2".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(MachineView::from_hash("m1", &hash).unwrap(), Some(view));
        assert_eq!(MachineView::from_hash("m2", &HashMap::new()).unwrap(), None);
    }
}

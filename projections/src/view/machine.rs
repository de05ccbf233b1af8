//! What machine queries answer, built the same way by every read model: the embedded one
//! (folding the domain state), the `redis` projection's hash, the `postgres` projection's
//! row, and the stream itself when the read model has not seen a machine yet.
//!
//! `workers` are sorted by worker id and `current_jobs` (the jobs the workers report
//! working on) by job id in every model. `last_heartbeat_at` as built here is the time of
//! the last event the machine caused; the HTTP layer replaces it with the last-seen time
//! of the heartbeat store (`jobsource-app`'s `service::machines::seen`), which also moves on
//! heartbeats that change nothing.

use chrono::{DateTime, Utc};
use jobsource_domain::machine::{Machine, MachineEvent};
use jobsource_eventstore::typed::from_envelope;
use jobsource_eventstore::Envelope;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::timestamp;

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
}

//! Machine state (a fold of machine events) and the decision function.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command::{
    Heartbeat, MachineCommand, MarkOffline, RegisterMachine, MAX_CAPABILITIES, MAX_GPU_MEMORY,
    MAX_WORKERS,
};
use super::event::MachineEvent;
use crate::error::{DomainError, FieldError};
use crate::validate;

/// Longest accepted capability name.
const MAX_CAPABILITY_LEN: usize = 128;

/// Status of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineStatus {
    /// Heartbeating, taking work.
    Online,
    /// Heartbeating, fully busy.
    Busy,
    /// Stopped heartbeating, or said so.
    Offline,
    /// Reported a fault.
    Error,
}

impl MachineStatus {
    /// Every status, in documentation order.
    pub const ALL: [MachineStatus; 4] = [
        MachineStatus::Online,
        MachineStatus::Busy,
        MachineStatus::Offline,
        MachineStatus::Error,
    ];

    /// The status name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineStatus::Online => "online",
            MachineStatus::Busy => "busy",
            MachineStatus::Offline => "offline",
            MachineStatus::Error => "error",
        }
    }

    /// Parses a status name; the error names `field`.
    pub fn parse(field: &str, s: &str) -> Result<MachineStatus, FieldError> {
        MachineStatus::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    format!("must be online, busy, offline or error, not {s:?}"),
                )
            })
    }
}

impl fmt::Display for MachineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of one worker of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Waiting for work.
    Idle,
    /// Working on a job.
    Busy,
    /// Not running.
    Offline,
}

impl WorkerStatus {
    /// Every status.
    pub const ALL: [WorkerStatus; 3] = [
        WorkerStatus::Idle,
        WorkerStatus::Busy,
        WorkerStatus::Offline,
    ];

    /// The status name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Idle => "idle",
            WorkerStatus::Busy => "busy",
            WorkerStatus::Offline => "offline",
        }
    }

    /// Parses a status name; the error names `field`.
    pub fn parse(field: &str, s: &str) -> Result<WorkerStatus, FieldError> {
        WorkerStatus::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                FieldError::new(field, format!("must be idle, busy or offline, not {s:?}"))
            })
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a worker last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerState {
    /// Worker id.
    pub worker_id: String,
    /// Status.
    pub status: WorkerStatus,
    /// The job it works on.
    pub current_job_id: Option<Uuid>,
}

/// The state of one machine: the fold of its events. `Default` is "not registered".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Machine id (empty until registered).
    pub id: String,
    /// Status; `None` before registration.
    pub status: Option<MachineStatus>,
    /// Declared capabilities.
    pub capabilities: Vec<String>,
    /// GPU memory in GB.
    pub gpu_memory: Option<f64>,
    /// IP address.
    pub ip_address: Option<String>,
    /// Workers by id, as last reported.
    pub workers: BTreeMap<String, WorkerState>,
    /// Number of events applied (the stream version).
    pub version: u64,
}

impl Machine {
    /// Folds events into a state.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a MachineEvent>) -> Machine {
        let mut machine = Machine::default();
        for e in events {
            machine.apply(e);
        }
        machine
    }

    /// Applies one event. Infallible: events are facts already decided.
    pub fn apply(&mut self, event: &MachineEvent) {
        match event {
            MachineEvent::MachineRegistered {
                machine_id,
                capabilities,
                gpu_memory,
                ip_address,
                status,
            } => {
                self.id = machine_id.clone();
                self.capabilities = capabilities.clone();
                self.gpu_memory = *gpu_memory;
                self.ip_address = ip_address.clone();
                self.status = Some(*status);
            }
            MachineEvent::MachineStatusChanged { status, .. } => self.status = Some(*status),
            MachineEvent::WorkerStatusChanged {
                worker_id,
                status,
                current_job_id,
                ..
            } => {
                self.workers.insert(
                    worker_id.clone(),
                    WorkerState {
                        worker_id: worker_id.clone(),
                        status: *status,
                        current_job_id: *current_job_id,
                    },
                );
            }
        }
        self.version += 1;
    }

    /// The jobs its workers work on (sorted, each once).
    pub fn current_jobs(&self) -> Vec<Uuid> {
        let mut jobs: Vec<Uuid> = self
            .workers
            .values()
            .filter_map(|w| w.current_job_id)
            .collect();
        jobs.sort();
        jobs.dedup();
        jobs
    }

    /// Decides a command against this state.
    pub fn decide(&self, command: &MachineCommand) -> Result<Vec<MachineEvent>, DomainError> {
        match command {
            MachineCommand::Register(r) => self.decide_register(r),
            MachineCommand::Heartbeat(h) => {
                validate_heartbeat(h)?;
                Ok(self.decide_heartbeat(self.registered()?, h))
            }
            MachineCommand::MarkOffline(m) => Ok(self.decide_offline(self.registered()?, m)),
        }
    }

    /// The status of a registered machine; `NotFound` before registration.
    fn registered(&self) -> Result<MachineStatus, DomainError> {
        self.status.ok_or(DomainError::NotFound { kind: "machine" })
    }

    fn decide_register(&self, r: &RegisterMachine) -> Result<Vec<MachineEvent>, DomainError> {
        validate_register(r)?;
        if self.status.is_some() && r.machine_id != self.id {
            return Err(DomainError::field(
                "machine_id",
                format!("this stream belongs to machine {:?}", self.id),
            ));
        }
        let same = self.status.is_some()
            && self.capabilities == r.capabilities
            && self.gpu_memory == r.gpu_memory
            && self.ip_address == r.ip_address;
        if same {
            return Ok(Vec::new());
        }
        Ok(vec![MachineEvent::MachineRegistered {
            machine_id: r.machine_id.clone(),
            capabilities: r.capabilities.clone(),
            gpu_memory: r.gpu_memory,
            ip_address: r.ip_address.clone(),
            status: self.status.unwrap_or(MachineStatus::Online),
        }])
    }

    fn decide_heartbeat(&self, status: MachineStatus, h: &Heartbeat) -> Vec<MachineEvent> {
        let mut events = Vec::new();
        let target = match h.status {
            Some(s) => s,
            // A machine that heartbeats is not offline.
            None if status == MachineStatus::Offline => MachineStatus::Online,
            None => status,
        };
        if target != status {
            events.push(MachineEvent::MachineStatusChanged {
                machine_id: self.id.clone(),
                status: target,
                previous_status: status,
                details: None,
            });
        }
        for w in h.workers.iter().flatten() {
            let unchanged = self.workers.get(&w.worker_id).is_some_and(|known| {
                known.status == w.status && known.current_job_id == w.current_job_id
            });
            if !unchanged {
                events.push(MachineEvent::WorkerStatusChanged {
                    worker_id: w.worker_id.clone(),
                    machine_id: self.id.clone(),
                    status: w.status,
                    current_job_id: w.current_job_id,
                });
            }
        }
        events
    }

    fn decide_offline(&self, status: MachineStatus, m: &MarkOffline) -> Vec<MachineEvent> {
        if status == MachineStatus::Offline {
            return Vec::new();
        }
        vec![MachineEvent::MachineStatusChanged {
            machine_id: self.id.clone(),
            status: MachineStatus::Offline,
            previous_status: status,
            details: Some(m.details.clone()),
        }]
    }
}

/// Validates a machine id (`machine_id` field).
fn check_machine_id(id: &str, errors: &mut Vec<FieldError>) {
    if !validate::is_valid_machine_id(id) {
        errors.push(FieldError::new(
            "machine_id",
            validate::machine_id_message(id),
        ));
    }
}

fn validate_register(r: &RegisterMachine) -> Result<(), DomainError> {
    let mut errors = Vec::new();
    check_machine_id(&r.machine_id, &mut errors);
    if r.capabilities.len() > MAX_CAPABILITIES {
        errors.push(FieldError::new(
            "capabilities",
            format!("at most {MAX_CAPABILITIES} capabilities"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, c) in r.capabilities.iter().enumerate() {
        if c.trim().is_empty() || c.len() > MAX_CAPABILITY_LEN {
            errors.push(FieldError::new(
                format!("capabilities[{i}]"),
                format!("must be 1 to {MAX_CAPABILITY_LEN} characters, not blank"),
            ));
        } else if !seen.insert(c.as_str()) {
            errors.push(FieldError::new(
                format!("capabilities[{i}]"),
                format!("{c:?} is listed twice"),
            ));
        }
    }
    if let Some(g) = r.gpu_memory {
        if !g.is_finite() || !(0.0..=MAX_GPU_MEMORY).contains(&g) {
            errors.push(FieldError::new(
                "gpu_memory",
                format!("must be a number of GB between 0 and {MAX_GPU_MEMORY}"),
            ));
        }
    }
    if let Some(ip) = &r.ip_address {
        if ip.parse::<std::net::IpAddr>().is_err() {
            errors.push(FieldError::new(
                "ip_address",
                "must be an IPv4 or IPv6 address",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DomainError::Validation(errors))
    }
}

fn validate_heartbeat(h: &Heartbeat) -> Result<(), DomainError> {
    let Some(workers) = &h.workers else {
        return Ok(());
    };
    if workers.len() > MAX_WORKERS {
        return Err(DomainError::field(
            "workers",
            format!(
                "at most {MAX_WORKERS} workers per heartbeat, got {}",
                workers.len()
            ),
        ));
    }
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (i, w) in workers.iter().enumerate() {
        if !validate::is_valid_machine_id(&w.worker_id) {
            errors.push(FieldError::new(
                format!("workers[{i}].worker_id"),
                validate::machine_id_message(&w.worker_id),
            ));
        } else if !seen.insert(w.worker_id.as_str()) {
            errors.push(FieldError::new(
                format!("workers[{i}].worker_id"),
                format!("worker {:?} is listed twice", w.worker_id),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DomainError::Validation(errors))
    }
}

impl Heartbeat {
    /// Checks the heartbeat's own fields (worker ids, their count) without a state: what
    /// a caller must know before recording that the machine was seen.
    pub fn validate(&self) -> Result<(), DomainError> {
        validate_heartbeat(self)
    }
}

//! Machine commands: what a machine (or the timeout sweeper) asks its aggregate to do.
//!
//! Commands are already typed (statuses are enums); the HTTP layer parses status names
//! with [`super::MachineStatus::parse`] and [`super::WorkerStatus::parse`], which name
//! the failing field. Everything else is validated by the decision.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::state::{MachineStatus, WorkerStatus};

/// Largest accepted `gpu_memory` (GB).
pub const MAX_GPU_MEMORY: f64 = 10_000.0;
/// Most workers one heartbeat may report.
pub const MAX_WORKERS: usize = 1024;
/// Most capabilities one machine may declare.
pub const MAX_CAPABILITIES: usize = 256;

/// Register a machine (or update what it declares).
///
/// Registering again with the same capabilities, GPU memory and IP address changes
/// nothing (no events); with any of them changed, `machine_registered` is recorded again
/// with the new values and the machine's current status (its workers are kept).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegisterMachine {
    /// Machine id, `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`.
    pub machine_id: String,
    /// What its workers can run (job types or capability names).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// GPU memory in GB (0..=10000).
    #[serde(default)]
    pub gpu_memory: Option<f64>,
    /// IPv4 or IPv6 address.
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// One worker's state as a heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Worker id (same pattern as machine ids).
    pub worker_id: String,
    /// Its status.
    pub status: WorkerStatus,
    /// The job it is working on.
    #[serde(default)]
    pub current_job_id: Option<Uuid>,
}

/// A heartbeat: optionally the machine's status and its workers' states.
///
/// Events only for what changed: the machine's status when `status` differs from the
/// current one (no `status` on an offline machine brings it back online), and one
/// `worker_status_changed` per reported worker whose status or current job differs from
/// what it last reported. Workers not reported keep their state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The machine's status, when it reports one.
    #[serde(default)]
    pub status: Option<MachineStatus>,
    /// Worker states (at most [`MAX_WORKERS`], each worker once).
    #[serde(default)]
    pub workers: Option<Vec<WorkerReport>>,
}

/// Mark a machine offline (it stopped heartbeating): one `machine_status_changed` with
/// `details`. Its workers keep their last reported state (the caller expires the job
/// leases the machine held). Nothing happens when it is offline already.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MarkOffline {
    /// Why, e.g. `no heartbeat for 60s`.
    pub details: String,
}

/// Every command a machine accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum MachineCommand {
    /// Create the machine, or update what it declares.
    Register(RegisterMachine),
    /// A heartbeat.
    Heartbeat(Heartbeat),
    /// The sweeper's timeout.
    MarkOffline(MarkOffline),
}

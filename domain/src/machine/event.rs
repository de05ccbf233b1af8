//! Machine events. Serialized adjacently tagged, `{"type": "machine_registered", "data":
//! {...}}`: the envelope's `type` and `data`. Every payload carries `machine_id`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::state::{MachineStatus, WorkerStatus};

/// Every machine event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum MachineEvent {
    /// The machine exists (first registration), or declared new values (re-registration).
    MachineRegistered {
        /// Machine id.
        machine_id: String,
        /// Capabilities.
        capabilities: Vec<String>,
        /// GPU memory in GB.
        #[serde(default)]
        gpu_memory: Option<f64>,
        /// IP address.
        #[serde(default)]
        ip_address: Option<String>,
        /// `online` at the first registration; the current status after that.
        status: MachineStatus,
    },
    /// The machine's status changed.
    MachineStatusChanged {
        /// Machine id.
        machine_id: String,
        /// New status.
        status: MachineStatus,
        /// Status before.
        previous_status: MachineStatus,
        /// Why; set by [`super::MachineCommand::MarkOffline`] (the timeout), absent when a
        /// heartbeat reported the change.
        #[serde(default)]
        details: Option<String>,
    },
    /// One worker of the machine reported a new status or current job.
    WorkerStatusChanged {
        /// Worker id.
        worker_id: String,
        /// Machine id.
        machine_id: String,
        /// New status.
        status: WorkerStatus,
        /// The job it works on.
        #[serde(default)]
        current_job_id: Option<Uuid>,
    },
}

impl MachineEvent {
    /// The envelope type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            MachineEvent::MachineRegistered { .. } => "machine_registered",
            MachineEvent::MachineStatusChanged { .. } => "machine_status_changed",
            MachineEvent::WorkerStatusChanged { .. } => "worker_status_changed",
        }
    }

    /// Current schema of the payload.
    pub fn schema(&self) -> u32 {
        1
    }

    /// The machine this event belongs to.
    pub fn machine_id(&self) -> &str {
        match self {
            MachineEvent::MachineRegistered { machine_id, .. }
            | MachineEvent::MachineStatusChanged { machine_id, .. }
            | MachineEvent::WorkerStatusChanged { machine_id, .. } => machine_id,
        }
    }

    /// Whether the machine itself caused this event (everything but the sweeper's
    /// timeout, a status change with `details`): read models move `last_heartbeat` with it.
    pub fn is_from_machine(&self) -> bool {
        !matches!(
            self,
            MachineEvent::MachineStatusChanged {
                details: Some(_),
                ..
            }
        )
    }
}

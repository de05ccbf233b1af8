//! Request and response bodies of `/v1/machines` (also the OpenAPI schemas).
//!
//! Status names are read as strings and parsed into the domain's enums here, so a bad one
//! is a 422 `VALIDATION_FAILED` naming the field (`status`, `workers[3].status`) rather
//! than a JSON decoding error; everything else the domain validates.

use jobsource_domain::machine::{
    Heartbeat, MachineStatus, RegisterMachine, WorkerReport, WorkerStatus, MAX_WORKERS,
};
use jobsource_domain::{DomainError, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// `POST /v1/machines`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterMachineRequest {
    /// Machine id, `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`.
    pub machine_id: String,
    /// What its workers can run (job types or capability names; at most 256).
    pub capabilities: Vec<String>,
    /// GPU memory in GB, 0..=10000.
    #[serde(default)]
    pub gpu_memory: Option<f64>,
    /// IPv4 or IPv6 address.
    #[serde(default)]
    pub ip_address: Option<String>,
}

impl From<RegisterMachineRequest> for RegisterMachine {
    fn from(r: RegisterMachineRequest) -> Self {
        RegisterMachine {
            machine_id: r.machine_id,
            capabilities: r.capabilities,
            gpu_memory: r.gpu_memory,
            ip_address: r.ip_address,
        }
    }
}

/// One worker in a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerReportBody {
    /// Worker id (same pattern as machine ids).
    pub worker_id: String,
    /// `idle|busy|offline`.
    pub status: String,
    /// The job it works on.
    #[serde(default)]
    pub current_job_id: Option<Uuid>,
}

/// `POST /v1/machines/{id}/heartbeat` (an empty body is a bare heartbeat).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// `online|busy|offline|error`; absent: unchanged (an offline machine comes back online).
    #[serde(default)]
    pub status: Option<String>,
    /// Worker states (at most 1024); workers not listed keep their last state.
    #[serde(default)]
    pub workers: Option<Vec<WorkerReportBody>>,
}

impl HeartbeatRequest {
    /// The domain command (bad status names and too many workers as a validation failure).
    pub fn into_command(self) -> Result<Heartbeat, DomainError> {
        let mut errors: Vec<FieldError> = Vec::new();
        let status = match self
            .status
            .as_deref()
            .map(|s| MachineStatus::parse("status", s))
        {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                errors.push(e);
                None
            }
            None => None,
        };
        let workers = match self.workers {
            Some(w) if w.len() > MAX_WORKERS => {
                errors.push(FieldError::new(
                    "workers",
                    format!(
                        "at most {MAX_WORKERS} workers per heartbeat, got {}",
                        w.len()
                    ),
                ));
                None
            }
            Some(w) => {
                let mut out = Vec::with_capacity(w.len());
                for (i, r) in w.into_iter().enumerate() {
                    match WorkerStatus::parse(&format!("workers[{i}].status"), &r.status) {
                        Ok(status) => out.push(WorkerReport {
                            worker_id: r.worker_id,
                            status,
                            current_job_id: r.current_job_id,
                        }),
                        Err(e) => errors.push(e),
                    }
                }
                Some(out)
            }
            None => None,
        };
        if !errors.is_empty() {
            return Err(DomainError::Validation(errors));
        }
        Ok(Heartbeat { status, workers })
    }
}

/// Answer of `POST /v1/machines`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MachineCommandResponse {
    /// Machine id.
    pub machine_id: String,
    /// Status after the command.
    pub status: String,
    /// Stream version after the command.
    pub version: u64,
    /// Position of the last event written; `null` when nothing changed.
    pub position: Option<String>,
    /// True when this is the recorded answer of an earlier request with the same key.
    pub replayed: bool,
}

/// Answer of `POST /v1/machines/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// Machine id.
    pub machine_id: String,
    /// Status after the heartbeat.
    pub status: String,
    /// Stream version after the heartbeat.
    pub version: u64,
    /// Position of the last event written; `null` when the heartbeat changed nothing.
    pub position: Option<String>,
    /// The last-seen time now recorded (RFC 3339).
    pub last_heartbeat_at: Option<String>,
    /// True when this is the recorded answer of an earlier request with the same key.
    pub replayed: bool,
}

/// `GET /v1/machines` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MachineListParams {
    /// Status filter: `online|busy|offline|error`.
    pub status: Option<String>,
    /// Page size (1..=500, default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (a machine id).
    pub cursor: Option<String>,
    /// Wait until the list model has passed this position.
    pub min_position: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_statuses_name_their_field() {
        let r = HeartbeatRequest {
            status: Some("sleeping".into()),
            workers: Some(vec![
                WorkerReportBody {
                    worker_id: "w0".into(),
                    status: "idle".into(),
                    current_job_id: None,
                },
                WorkerReportBody {
                    worker_id: "w1".into(),
                    status: "napping".into(),
                    current_job_id: None,
                },
            ]),
        };
        match r.into_command() {
            Err(DomainError::Validation(errors)) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["status", "workers[1].status"]);
            }
            other => panic!("{other:?}"),
        }
        let ok = HeartbeatRequest::default().into_command().unwrap();
        assert_eq!(ok, Heartbeat::default());
    }
}

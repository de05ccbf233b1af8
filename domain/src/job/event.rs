//! Job events. Serialized adjacently tagged, `{"type": "job_submitted", "data": {...}}`:
//! the envelope's `type` and `data`. Every payload carries `job_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::state::JobStatus;

/// What a worker needs to take a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// Capabilities the worker must have (default: the job type).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// GPU memory in GB, when it matters.
    #[serde(default)]
    pub gpu_memory: Option<f64>,
}

/// A failure reported by a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// Payload of `job_submitted` (schema 2).
///
/// Schema 1 (the seed system's layout) had `job_type` instead of `type` and
/// `payload: {prompt, parameters}` instead of top-level fields, and no `status`; the event
/// store's upcaster lifts it on read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSubmitted {
    /// Job id.
    pub job_id: Uuid,
    /// Job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Parameters.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Priority 0..=100.
    pub priority: u8,
    /// Resolved requirements.
    pub requirements: Requirements,
    /// Webhook target.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Owning workflow.
    #[serde(default)]
    pub workflow_id: Option<Uuid>,
    /// Step index in the workflow.
    #[serde(default)]
    pub step_index: Option<u32>,
    /// Dependencies.
    #[serde(default)]
    pub depends_on: Vec<Uuid>,
    /// Retry budget.
    pub max_retries: u32,
    /// `waiting` when it has dependencies, else `pending`.
    pub status: JobStatus,
    /// Not claimable before this time (a delayed job); absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<DateTime<Utc>>,
}

/// Every job event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job exists.
    JobSubmitted(JobSubmitted),
    /// All dependencies completed: waiting -> pending.
    JobReleased {
        /// Job id.
        job_id: Uuid,
    },
    /// Assigned to a worker; `attempt` counts assignments.
    JobAssigned {
        /// Job id.
        job_id: Uuid,
        /// Worker.
        worker_id: String,
        /// Machine.
        machine_id: String,
        /// 1 for the first assignment.
        attempt: u32,
        /// When the lease runs out unless renewed (absent on events written before leases).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_expires_at: Option<DateTime<Utc>>,
    },
    /// Progress report.
    JobProgress {
        /// Job id.
        job_id: Uuid,
        /// 0..=100.
        progress: u8,
        /// Stage name.
        #[serde(default)]
        stage: Option<String>,
        /// Message.
        #[serde(default)]
        message: Option<String>,
    },
    /// Completed with a result.
    JobCompleted {
        /// Job id.
        job_id: Uuid,
        /// Result.
        #[serde(default)]
        result: Value,
        /// Duration.
        #[serde(default)]
        duration_ms: Option<u64>,
    },
    /// An attempt failed; `will_retry` tells whether it goes back to pending.
    JobFailed {
        /// Job id.
        job_id: Uuid,
        /// Error.
        error: JobError,
        /// Reported retryable.
        retryable: bool,
        /// Failures so far, this one included.
        retry_count: u32,
        /// True: back to pending; false: terminal `failed`.
        will_retry: bool,
        /// With `will_retry`: when the retry becomes claimable (the backoff).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        available_at: Option<DateTime<Utc>>,
    },
    /// The lease of an attempt ran out. Always followed, in the same append, by the
    /// `job_failed` (error code `LEASE_EXPIRED`) that counts the attempt, so every consumer
    /// of failures treats an expiry like any other failed attempt.
    JobLeaseExpired {
        /// Job id.
        job_id: Uuid,
        /// The attempt whose lease ran out.
        attempt: u32,
        /// Its worker.
        worker_id: String,
        /// Its machine.
        machine_id: String,
        /// True: back to pending; false: terminal `failed`.
        will_retry: bool,
    },
    /// Cancelled before it started.
    JobCancelled {
        /// Job id.
        job_id: Uuid,
        /// Reason.
        #[serde(default)]
        reason: Option<String>,
    },
}

impl JobEvent {
    /// The envelope type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            JobEvent::JobSubmitted(_) => "job_submitted",
            JobEvent::JobReleased { .. } => "job_released",
            JobEvent::JobAssigned { .. } => "job_assigned",
            JobEvent::JobProgress { .. } => "job_progress",
            JobEvent::JobCompleted { .. } => "job_completed",
            JobEvent::JobFailed { .. } => "job_failed",
            JobEvent::JobLeaseExpired { .. } => "job_lease_expired",
            JobEvent::JobCancelled { .. } => "job_cancelled",
        }
    }

    /// Current schema of the payload (`job_submitted` is at 2, see [`JobSubmitted`]).
    pub fn schema(&self) -> u32 {
        match self {
            JobEvent::JobSubmitted(_) => 2,
            _ => 1,
        }
    }

    /// The job this event belongs to.
    pub fn job_id(&self) -> Uuid {
        match self {
            JobEvent::JobSubmitted(s) => s.job_id,
            JobEvent::JobReleased { job_id }
            | JobEvent::JobAssigned { job_id, .. }
            | JobEvent::JobProgress { job_id, .. }
            | JobEvent::JobCompleted { job_id, .. }
            | JobEvent::JobFailed { job_id, .. }
            | JobEvent::JobLeaseExpired { job_id, .. }
            | JobEvent::JobCancelled { job_id, .. } => *job_id,
        }
    }
}

//! Job commands: what a client or the orchestrator asks a job to do.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::event::{JobError, Requirements};

/// Default priority of a submitted job.
pub const DEFAULT_PRIORITY: u8 = 50;
/// Default number of retries after a retryable failure.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Largest accepted `max_retries`.
pub const MAX_RETRIES_LIMIT: u32 = 100;

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

fn default_true() -> bool {
    true
}

/// Submit a new job. The caller allocates `job_id` (UUID v7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitJob {
    /// Id of the new job.
    pub job_id: Uuid,
    /// Job type, `[a-z0-9][a-z0-9._-]{0,63}`.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Optional prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Free-form parameters.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// 0..=100, higher is claimed first.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Worker requirements; defaults to `{capabilities: [type], gpu_memory: null}`.
    #[serde(default)]
    pub requirements: Option<Requirements>,
    /// Receives completion/failure webhooks.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Owning workflow, for step jobs.
    #[serde(default)]
    pub workflow_id: Option<Uuid>,
    /// Step index within the workflow.
    #[serde(default)]
    pub step_index: Option<u32>,
    /// Jobs that must complete before this one is released.
    #[serde(default)]
    pub depends_on: Vec<Uuid>,
    /// Retries after retryable failures.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Not claimable before this time (`delay_ms` / `run_at`, resolved by the caller).
    #[serde(default)]
    pub available_at: Option<DateTime<Utc>>,
}

impl Default for SubmitJob {
    fn default() -> Self {
        SubmitJob {
            job_id: Uuid::nil(),
            job_type: String::new(),
            prompt: None,
            parameters: Map::new(),
            priority: DEFAULT_PRIORITY,
            requirements: None,
            webhook_url: None,
            workflow_id: None,
            step_index: None,
            depends_on: Vec::new(),
            max_retries: DEFAULT_MAX_RETRIES,
            available_at: None,
        }
    }
}

/// Assign a pending job to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AssignJob {
    /// Worker taking the job.
    pub worker_id: String,
    /// Machine the worker runs on.
    pub machine_id: String,
    /// When the assignment's lease runs out unless renewed (chosen by the caller).
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// Report progress of an assigned or running job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportProgress {
    /// The reporting worker; when given it must hold the job.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// 0..=100, never decreasing within an attempt.
    pub progress: u8,
    /// Optional stage name.
    #[serde(default)]
    pub stage: Option<String>,
    /// Optional message.
    #[serde(default)]
    pub message: Option<String>,
}

/// Complete an assigned or running job.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompleteJob {
    /// The reporting worker; when given it must hold the job.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The job's result.
    #[serde(default)]
    pub result: Value,
    /// How long the work took.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// Fail an assigned or running job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailJob {
    /// What went wrong.
    pub error: JobError,
    /// Whether another attempt may succeed.
    #[serde(default = "default_true")]
    pub retryable: bool,
    /// The reporting worker; when given it must hold the job.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// When a retry becomes claimable (the caller's backoff); `None`: at once.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
}

/// The lease of an attempt ran out (a durable timer or an offline machine fired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireLease {
    /// The attempt whose lease ran out; a later attempt is not touched.
    pub attempt: u32,
    /// When a retry becomes claimable (the caller's backoff); `None`: at once.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// Why (shown in the failure's message), e.g. `lease expired` or `machine offline`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Expire before the deadline (the holder's machine went offline). The decision does
    /// not depend on it; the store's due-check does.
    #[serde(default)]
    pub force: bool,
}

/// Cancel a waiting or pending job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CancelJob {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Every command a job accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum JobCommand {
    /// Create the job.
    Submit(SubmitJob),
    /// All dependencies completed: waiting -> pending.
    Release,
    /// pending -> assigned.
    Assign(AssignJob),
    /// Progress report; assigned -> running on the first one.
    ReportProgress(ReportProgress),
    /// -> completed.
    Complete(CompleteJob),
    /// -> pending (will retry) or failed.
    Fail(FailJob),
    /// The current attempt's lease ran out: -> pending (will retry) or failed.
    ExpireLease(ExpireLease),
    /// waiting/pending -> cancelled.
    Cancel(CancelJob),
}

impl JobCommand {
    /// Short name used in errors (`cannot <name> job in status ...`).
    pub fn name(&self) -> &'static str {
        match self {
            JobCommand::Submit(_) => "submit",
            JobCommand::Release => "release",
            JobCommand::Assign(_) => "assign",
            JobCommand::ReportProgress(_) => "report progress of",
            JobCommand::Complete(_) => "complete",
            JobCommand::Fail(_) => "fail",
            JobCommand::ExpireLease(_) => "expire the lease of",
            JobCommand::Cancel(_) => "cancel",
        }
    }
}

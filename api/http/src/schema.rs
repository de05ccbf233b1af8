//! OpenAPI schemas of the read side's views.
//!
//! The views (`JobView`, `WorkflowView`, `MachineView`, deliveries, projection rows) live
//! in `jobsource-app`, which does not depend on the HTTP stack; these mirrors carry the
//! same names, fields and serde attributes, so the document describes exactly what the
//! handlers serialize. They are only used in `#[utoipa::path]` and `components(schemas)`:
//! a field added to a view is added here too (the `/openapi.json` document was identical
//! before and after the views moved out of the HTTP crate).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// A job as the read models show it.
#[derive(Serialize, ToSchema)]
pub struct JobView {
    /// Job id.
    pub id: Uuid,
    /// Job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// `waiting|pending|assigned|running|completed|failed|cancelled`.
    pub status: String,
    /// 0..=100; claims take the highest first.
    pub priority: u8,
    /// Progress of the current attempt, 0..=100.
    pub progress: u8,
    /// Last reported stage.
    pub stage: Option<String>,
    /// Prompt.
    pub prompt: Option<String>,
    /// Free-form parameters.
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    /// `{capabilities[], gpu_memory}`.
    #[schema(value_type = Option<Object>)]
    pub requirements: Option<Value>,
    /// Webhook target.
    pub webhook_url: Option<String>,
    /// Owning workflow.
    pub workflow_id: Option<Uuid>,
    /// Step index in the workflow.
    pub step_index: Option<u32>,
    /// Jobs this one waits for.
    pub depends_on: Vec<Uuid>,
    /// Worker of the current or last attempt.
    pub worker_id: Option<String>,
    /// Machine of the current or last attempt.
    pub machine_id: Option<String>,
    /// Assignments so far.
    pub attempt: u32,
    /// Failures so far.
    pub retry_count: u32,
    /// Retry budget.
    pub max_retries: u32,
    /// Result once completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Last error `{code, message}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Submission time.
    pub created_at: Option<String>,
    /// Time of the last event.
    pub updated_at: Option<String>,
    /// First assignment.
    pub started_at: Option<String>,
    /// Reached a terminal status.
    pub completed_at: Option<String>,
    /// While pending: not claimable before this time (a delay or a retry's backoff).
    /// Lookups show it; list pages leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<String>,
    /// While assigned or running: when the lease runs out unless renewed. Lookups show
    /// the live deadline (renewals included); list pages leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    /// Stream version this view reflects.
    pub version: u64,
}

/// One step of a workflow with its job's live state.
#[derive(Serialize, ToSchema)]
pub struct StepView {
    /// Index in the workflow.
    pub step_index: u32,
    /// The step's job.
    pub job_id: Uuid,
    /// Job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Earlier steps this one waits for.
    pub depends_on: Vec<u32>,
    /// The job's status (`waiting` until it exists in the read model).
    pub status: String,
    /// The job's progress.
    pub progress: u8,
    /// The job's result.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The job's error.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// First assignment of the job.
    pub started_at: Option<String>,
    /// Terminal time of the job.
    pub completed_at: Option<String>,
}

/// A workflow with its steps.
#[derive(Serialize, ToSchema)]
pub struct WorkflowView {
    /// Workflow id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// `pending|running|completed|failed|cancelled`.
    pub status: String,
    /// Number of steps.
    pub total_steps: u32,
    /// Steps completed.
    pub completed_steps: u32,
    /// completed_steps / total_steps * 100, rounded down.
    pub progress_percentage: u32,
    /// One job per step.
    pub job_ids: Vec<Uuid>,
    /// Webhook target.
    pub webhook_url: Option<String>,
    /// The failing step's error.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Creation time.
    pub created_at: Option<String>,
    /// Last event time.
    pub updated_at: Option<String>,
    /// Terminal time.
    pub completed_at: Option<String>,
    /// Stream version.
    pub version: u64,
    /// Steps, in index order (present on single-workflow reads, empty in lists).
    pub steps: Vec<StepView>,
}

/// A page of a list and the cursor of the next one.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    /// Items, oldest first (ids are UUID v7).
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/jobs/stats`.
#[derive(Serialize, ToSchema)]
pub struct JobStats {
    /// Jobs created in the timeframe.
    pub total: u64,
    /// Count per status.
    pub by_status: BTreeMap<String, u64>,
    /// Count per type.
    pub by_type: BTreeMap<String, u64>,
}

/// `GET /v1/workflows/stats`.
#[derive(Serialize, ToSchema)]
pub struct WorkflowStats {
    /// Workflows created in the timeframe.
    pub total: u64,
    /// Count per status.
    pub by_status: BTreeMap<String, u64>,
}

/// One worker of a machine, as it last reported.
#[derive(Serialize, ToSchema)]
pub struct WorkerView {
    /// Worker id.
    pub worker_id: String,
    /// `idle|busy|offline`.
    pub status: String,
    /// The job it works on.
    pub current_job_id: Option<Uuid>,
}

/// A machine as the read models show it.
#[derive(Serialize, ToSchema)]
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

/// One recorded attempt.
#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    /// 1-based, counted over every round (manual retries continue the count).
    pub attempt: u32,
    /// When the request started.
    pub attempted_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// HTTP status answered, when there was an answer.
    pub status_code: Option<u16>,
    /// Why it failed (absent when delivered).
    pub error: Option<String>,
    /// `delivered`, `failed` (retried later) or `dead` (the last attempt).
    pub outcome: String,
}

/// A delivery record, as `GET /v1/webhooks/deliveries` shows it.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    /// Delivery id: the `X-Jobsource-Delivery` header (stable across attempts).
    pub id: Uuid,
    /// The event delivered.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Its stream.
    pub stream: String,
    /// Its position (`<partition>@<id>`).
    pub position: String,
    /// Target.
    pub url: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts made (over every round).
    pub attempts: u32,
    /// Manual retries of the dead-lettered delivery.
    pub requeues: u32,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<String>,
    /// HTTP status of the last attempt, when it got an answer.
    pub last_status_code: Option<u16>,
    /// Error of the last attempt, when it failed.
    pub last_error: Option<String>,
    /// When the delivery was enqueued.
    pub created_at: String,
    /// When a receiver accepted it.
    pub delivered_at: Option<String>,
    /// The body sent.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Every attempt, oldest first.
    pub attempt_history: Vec<AttemptView>,
}

/// A read model's progress on one partition.
#[derive(Serialize, ToSchema)]
pub struct ProjectionStatus {
    /// Projection name (`redis`, `postgres`, `archive`, `orchestrator`).
    pub projection: String,
    /// Partition.
    pub partition: u32,
    /// Last applied position (`<p>@<id>`).
    pub checkpoint: String,
    /// Events in the log after the checkpoint.
    pub lag: u64,
    /// `running|rebuilding|stalled|stopped`.
    pub state: String,
    /// Why it stalled.
    pub last_error: Option<String>,
    /// The instance holding the partition's lease (several instances share the
    /// consumers; `null` in embedded mode or while nobody holds it).
    pub owner: Option<String>,
    /// When that lease runs out (RFC 3339).
    pub lease_expires_at: Option<String>,
    /// During a rebuild only: events applied to the new model so far.
    #[schema(required = false)]
    pub events_done: Option<u64>,
    /// During a rebuild only: events up to the head when the rebuild read it.
    #[schema(required = false)]
    pub events_total: Option<u64>,
    /// During a rebuild only: average rate since it started.
    #[schema(required = false)]
    pub events_per_sec: Option<f64>,
    /// During a rebuild only: seconds left at that rate.
    #[schema(required = false)]
    pub eta_seconds: Option<f64>,
}

/// A rebuild's progress, as status rows show it while it runs.
#[derive(Serialize, ToSchema)]
pub struct RebuildStatus {
    /// Events applied to the new model so far.
    pub events_done: u64,
    /// Events to apply up to the head when the rebuild read it (when known).
    pub events_total: Option<u64>,
    /// Average rate since the rebuild started.
    pub events_per_sec: f64,
    /// Seconds left at that rate (when the total is known).
    pub eta_seconds: Option<f64>,
}

//! Answers of the seed API routes, in the seed's shapes.

use super::*;

/// `{success:true}` (internal routes).
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedOk {
    /// Always true.
    pub success: bool,
}

/// `{success, message}`: cancel answers (`success:false` when the status forbids it).
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedMessage {
    /// Whether the cancellation happened.
    pub success: bool,
    /// `Job cancelled successfully`, `Cannot cancel job in status: <s>`, ...
    pub message: String,
}

/// `POST /api/jobs/submit` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedSubmitResponse {
    /// Always true.
    pub success: bool,
    /// The new job.
    pub job_id: Uuid,
    /// `submitted` (queued; the read model says `pending`) or `waiting` (has dependencies).
    pub status: String,
}

/// The job object of `GET /api/jobs/{id}/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedJob {
    /// Job id.
    pub id: Uuid,
    /// Job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// `waiting|pending|assigned|running|completed|failed|cancelled`.
    pub status: String,
    /// 0..=100.
    pub progress: u8,
    /// Submission time (RFC 3339).
    pub created_at: Option<String>,
    /// First assignment.
    pub started_at: Option<String>,
    /// Terminal time.
    pub completed_at: Option<String>,
    /// Result once completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Last error `{code, message}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Worker of the current or last attempt.
    pub worker_id: Option<String>,
    /// Machine of the current or last attempt.
    pub machine_id: Option<String>,
    /// Owning workflow.
    pub workflow_id: Option<Uuid>,
}

impl From<JobView> for SeedJob {
    fn from(j: JobView) -> Self {
        SeedJob {
            id: j.id,
            job_type: j.job_type,
            status: j.status,
            progress: j.progress,
            created_at: j.created_at,
            started_at: j.started_at,
            completed_at: j.completed_at,
            result: j.result,
            error: j.error,
            worker_id: j.worker_id,
            machine_id: j.machine_id,
            workflow_id: j.workflow_id,
        }
    }
}

/// `GET /api/jobs/{id}/status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedJobStatusResponse {
    /// Always true.
    pub success: bool,
    /// The job.
    pub job: SeedJob,
}

/// Job counts of `GET /api/jobs/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedJobStats {
    /// pending + running + completed + failed.
    pub total: u64,
    /// Jobs in the pending zset.
    pub pending: u64,
    /// Jobs in the assigned set (assigned or running).
    pub running: u64,
    /// Jobs in the completed set.
    pub completed: u64,
    /// Jobs in the failed set.
    pub failed: u64,
    /// Jobs created within the timeframe, per type (every status).
    pub by_type: BTreeMap<String, u64>,
}

/// `GET /api/jobs/stats` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedJobStatsResponse {
    /// Always true.
    pub success: bool,
    /// The counts.
    pub stats: SeedJobStats,
    /// `hour`, `day` or `week`.
    pub timeframe: String,
}

/// `POST /api/workflows` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedWorkflowCreated {
    /// Always true.
    pub success: bool,
    /// The new workflow.
    pub workflow_id: Uuid,
    /// One job per step, in step order.
    pub job_ids: Vec<Uuid>,
}

/// The workflow object of `GET /api/workflows/{id}/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedWorkflow {
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
    /// completed / total * 100, rounded to two decimals (a number, as the seed's).
    pub progress_percentage: f64,
    /// Creation time.
    pub created_at: Option<String>,
    /// Terminal time.
    pub completed_at: Option<String>,
}

impl From<&WorkflowView> for SeedWorkflow {
    fn from(w: &WorkflowView) -> Self {
        SeedWorkflow {
            id: w.id,
            name: w.name.clone(),
            description: w.description.clone(),
            status: w.status.clone(),
            total_steps: w.total_steps,
            completed_steps: w.completed_steps,
            progress_percentage: percentage(w.completed_steps, w.total_steps),
            created_at: w.created_at.clone(),
            completed_at: w.completed_at.clone(),
        }
    }
}

/// The seed's `Math.round(completed / total * 100 * 100) / 100` (0 without steps).
pub fn percentage(completed: u32, total: u32) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (f64::from(completed) / f64::from(total) * 10_000.0).round() / 100.0
}

/// One step of `GET /api/workflows/{id}/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedStep {
    /// Index in the workflow.
    pub step_index: u32,
    /// The step's job.
    pub job_id: Uuid,
    /// The job's status.
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

impl From<&StepView> for SeedStep {
    fn from(s: &StepView) -> Self {
        SeedStep {
            step_index: s.step_index,
            job_id: s.job_id,
            status: s.status.clone(),
            progress: s.progress,
            result: s.result.clone(),
            error: s.error.clone(),
            started_at: s.started_at.clone(),
            completed_at: s.completed_at.clone(),
        }
    }
}

/// `GET /api/workflows/{id}/status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedWorkflowStatusResponse {
    /// Always true.
    pub success: bool,
    /// The workflow.
    pub workflow: SeedWorkflow,
    /// Its steps in index order.
    pub steps: Vec<SeedStep>,
}

/// Workflow counts of `GET /api/workflows/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedWorkflowStats {
    /// Every workflow.
    pub total: u64,
    /// Created, no step started.
    pub pending: u64,
    /// A step's job was assigned.
    pub running: u64,
    /// Every step completed.
    pub completed: u64,
    /// A step failed terminally.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// `GET /api/workflows/stats` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedWorkflowStatsResponse {
    /// Always true.
    pub success: bool,
    /// The counts.
    pub stats: SeedWorkflowStats,
    /// `hour`, `day` or `week`.
    pub timeframe: String,
}

//! Workflow commands.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Most steps a workflow may have.
pub const MAX_STEPS: usize = 50;

/// One step of a workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Job type of the step's job.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Parameters.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Indices of earlier steps this one depends on.
    #[serde(default)]
    pub depends_on: Vec<u32>,
}

/// Create a workflow. The caller allocates the workflow id and one job id per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateWorkflow {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// One job id per step.
    pub job_ids: Vec<Uuid>,
    /// Name (required).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Steps, 1..=50.
    pub steps: Vec<StepSpec>,
    /// Webhook target.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// Every command a workflow accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkflowCommand {
    /// Create it.
    Create(CreateWorkflow),
    /// A step's job was assigned.
    RecordStepStarted {
        /// Step.
        step_index: u32,
    },
    /// A step's job completed.
    RecordStepCompleted {
        /// Step.
        step_index: u32,
        /// Its job.
        job_id: Uuid,
        /// Its result.
        result: Value,
    },
    /// A step's job failed terminally.
    RecordStepFailed {
        /// Step.
        step_index: u32,
        /// Its job.
        job_id: Uuid,
        /// The error.
        error: Value,
    },
    /// Cancel the workflow.
    Cancel {
        /// Why.
        reason: Option<String>,
    },
}

impl WorkflowCommand {
    /// Short name used in errors.
    pub fn name(&self) -> &'static str {
        match self {
            WorkflowCommand::Create(_) => "create",
            WorkflowCommand::RecordStepStarted { .. } => "start a step of",
            WorkflowCommand::RecordStepCompleted { .. } => "complete a step of",
            WorkflowCommand::RecordStepFailed { .. } => "fail a step of",
            WorkflowCommand::Cancel { .. } => "cancel",
        }
    }
}

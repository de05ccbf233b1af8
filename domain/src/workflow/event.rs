//! Workflow events, adjacently tagged like job events. Every payload carries `workflow_id`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::command::StepSpec;

/// Payload of `workflow_created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowCreated {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Steps.
    pub steps: Vec<StepSpec>,
    /// One job id per step.
    pub job_ids: Vec<Uuid>,
    /// Webhook target.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Number of steps.
    pub total_steps: u32,
}

/// Final outcome of one step, in `workflow_completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDetail {
    /// Step.
    pub step_index: u32,
    /// Its job.
    pub job_id: Uuid,
    /// `completed` or `failed`.
    pub status: String,
    /// Result.
    #[serde(default)]
    pub result: Option<Value>,
    /// Error.
    #[serde(default)]
    pub error: Option<Value>,
}

/// Every workflow event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum WorkflowEvent {
    /// The workflow exists; its step jobs are to be submitted.
    WorkflowCreated(WorkflowCreated),
    /// A step's job was assigned (the first moves pending -> running).
    WorkflowStepStarted {
        /// Workflow id.
        workflow_id: Uuid,
        /// Step.
        step_index: u32,
        /// Its job.
        job_id: Uuid,
    },
    /// A step completed.
    WorkflowStepCompleted {
        /// Workflow id.
        workflow_id: Uuid,
        /// Step.
        step_index: u32,
        /// Its job.
        job_id: Uuid,
        /// Result.
        result: Value,
        /// Completed steps so far, this one included.
        completed_steps: u32,
    },
    /// Every step completed.
    WorkflowCompleted {
        /// Workflow id.
        workflow_id: Uuid,
        /// Per-step outcome.
        step_details: Vec<StepDetail>,
        /// Steps completed.
        success_count: u32,
        /// Steps failed.
        failed_count: u32,
    },
    /// A step failed terminally.
    WorkflowStepFailed {
        /// Workflow id.
        workflow_id: Uuid,
        /// Step.
        step_index: u32,
        /// Its job.
        job_id: Uuid,
        /// Error.
        error: Value,
    },
    /// The workflow failed (follows `workflow_step_failed`).
    WorkflowFailed {
        /// Workflow id.
        workflow_id: Uuid,
        /// Error of the failed step.
        error: Value,
        /// Index of the failed step.
        failed_step: u32,
    },
    /// The workflow was cancelled.
    WorkflowCancelled {
        /// Workflow id.
        workflow_id: Uuid,
        /// Reason.
        #[serde(default)]
        reason: Option<String>,
    },
}

impl WorkflowEvent {
    /// The envelope type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            WorkflowEvent::WorkflowCreated(_) => "workflow_created",
            WorkflowEvent::WorkflowStepStarted { .. } => "workflow_step_started",
            WorkflowEvent::WorkflowStepCompleted { .. } => "workflow_step_completed",
            WorkflowEvent::WorkflowCompleted { .. } => "workflow_completed",
            WorkflowEvent::WorkflowStepFailed { .. } => "workflow_step_failed",
            WorkflowEvent::WorkflowFailed { .. } => "workflow_failed",
            WorkflowEvent::WorkflowCancelled { .. } => "workflow_cancelled",
        }
    }

    /// Current schema of the payload (all at 1).
    pub fn schema(&self) -> u32 {
        1
    }
}

//! Workflow state (a fold of workflow events) and the decision function.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::command::{CreateWorkflow, WorkflowCommand, MAX_STEPS};
use super::event::{StepDetail, WorkflowCreated, WorkflowEvent};
use crate::error::{DomainError, FieldError};
use crate::validate;

/// Lifecycle status of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// Created, no step started.
    Pending,
    /// A step's job was assigned.
    Running,
    /// Every step completed (terminal).
    Completed,
    /// A step failed (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
}

impl WorkflowStatus {
    /// Completed, failed and cancelled are terminal.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Completed | WorkflowStatus::Failed | WorkflowStatus::Cancelled
        )
    }

    /// The status name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Pending => "pending",
            WorkflowStatus::Running => "running",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one step is, as the workflow has recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    #[default]
    Pending,
    /// Its job was assigned.
    Started,
    /// Its job completed.
    Completed,
    /// Its job failed terminally.
    Failed,
}

/// The state of one workflow. `Default` is "does not exist yet".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Workflow {
    /// Workflow id.
    pub id: Uuid,
    /// Status; `None` before creation.
    pub status: Option<WorkflowStatus>,
    /// The creation event (name, steps, job ids, ...).
    pub definition: Option<WorkflowCreated>,
    /// Per-step status.
    pub steps: Vec<StepStatus>,
    /// Per-step result.
    pub results: Vec<Option<Value>>,
    /// Per-step error.
    pub errors: Vec<Option<Value>>,
    /// Steps completed.
    pub completed_steps: u32,
    /// Number of events applied.
    pub version: u64,
}

impl Workflow {
    /// Folds events into a state.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a WorkflowEvent>) -> Workflow {
        let mut w = Workflow::default();
        for e in events {
            w.apply(e);
        }
        w
    }

    /// Job id of step `i`.
    pub fn job_id(&self, step: u32) -> Option<Uuid> {
        self.definition
            .as_ref()
            .and_then(|d| d.job_ids.get(step as usize).copied())
    }

    /// Step index of `job_id`.
    pub fn step_of(&self, job_id: Uuid) -> Option<u32> {
        self.definition
            .as_ref()
            .and_then(|d| d.job_ids.iter().position(|j| *j == job_id))
            .map(|i| i as u32)
    }

    /// Steps that depend directly on `step`.
    pub fn dependents_of(&self, step: u32) -> Vec<u32> {
        self.definition.as_ref().map_or_else(Vec::new, |d| {
            d.steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.depends_on.contains(&step))
                .map(|(i, _)| i as u32)
                .collect()
        })
    }

    /// True once terminal.
    pub fn is_terminal(&self) -> bool {
        self.status.is_some_and(WorkflowStatus::is_terminal)
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &WorkflowEvent) {
        match event {
            WorkflowEvent::WorkflowCreated(c) => {
                self.id = c.workflow_id;
                self.status = Some(WorkflowStatus::Pending);
                self.steps = vec![StepStatus::Pending; c.steps.len()];
                self.results = vec![None; c.steps.len()];
                self.errors = vec![None; c.steps.len()];
                self.definition = Some(c.clone());
            }
            WorkflowEvent::WorkflowStepStarted { step_index, .. } => {
                if let Some(s) = self.steps.get_mut(*step_index as usize) {
                    *s = StepStatus::Started;
                }
                if self.status == Some(WorkflowStatus::Pending) {
                    self.status = Some(WorkflowStatus::Running);
                }
            }
            WorkflowEvent::WorkflowStepCompleted {
                step_index,
                result,
                completed_steps,
                ..
            } => {
                let i = *step_index as usize;
                if let Some(s) = self.steps.get_mut(i) {
                    *s = StepStatus::Completed;
                }
                if let Some(r) = self.results.get_mut(i) {
                    *r = Some(result.clone());
                }
                self.completed_steps = *completed_steps;
            }
            WorkflowEvent::WorkflowCompleted { .. } => {
                self.status = Some(WorkflowStatus::Completed);
            }
            WorkflowEvent::WorkflowStepFailed {
                step_index, error, ..
            } => {
                let i = *step_index as usize;
                if let Some(s) = self.steps.get_mut(i) {
                    *s = StepStatus::Failed;
                }
                if let Some(e) = self.errors.get_mut(i) {
                    *e = Some(error.clone());
                }
            }
            WorkflowEvent::WorkflowFailed { .. } => self.status = Some(WorkflowStatus::Failed),
            WorkflowEvent::WorkflowCancelled { .. } => {
                self.status = Some(WorkflowStatus::Cancelled)
            }
        }
        self.version += 1;
    }

    /// Decides a command against this state.
    pub fn decide(&self, command: &WorkflowCommand) -> Result<Vec<WorkflowEvent>, DomainError> {
        let Some(status) = self.status else {
            return match command {
                WorkflowCommand::Create(c) => decide_create(c),
                _ => Err(DomainError::NotFound { kind: "workflow" }),
            };
        };
        let invalid = || DomainError::InvalidTransition {
            kind: "workflow",
            command: command.name(),
            status: status.to_string(),
        };
        let workflow_id = self.id;
        match command {
            WorkflowCommand::Create(_) => Err(DomainError::AlreadyExists { kind: "workflow" }),
            WorkflowCommand::RecordStepStarted { step_index } => {
                let step = self.step(*step_index)?;
                if step != StepStatus::Pending {
                    return Ok(vec![]); // re-delivery: already recorded
                }
                if status.is_terminal() {
                    return Err(invalid());
                }
                Ok(vec![WorkflowEvent::WorkflowStepStarted {
                    workflow_id,
                    step_index: *step_index,
                    job_id: self.job_id(*step_index).unwrap_or_default(),
                }])
            }
            WorkflowCommand::RecordStepCompleted {
                step_index,
                job_id,
                result,
            } => {
                if self.step_outcome_recorded(*step_index, *job_id)? {
                    return Ok(vec![]);
                }
                if status.is_terminal() {
                    return Err(invalid());
                }
                let completed_steps = self.completed_steps + 1;
                let mut events = vec![WorkflowEvent::WorkflowStepCompleted {
                    workflow_id,
                    step_index: *step_index,
                    job_id: *job_id,
                    result: result.clone(),
                    completed_steps,
                }];
                if completed_steps as usize == self.steps.len() {
                    let step_details = (0..self.steps.len())
                        .map(|i| StepDetail {
                            step_index: i as u32,
                            job_id: self.job_id(i as u32).unwrap_or_default(),
                            status: "completed".into(),
                            result: if i == *step_index as usize {
                                Some(result.clone())
                            } else {
                                self.results[i].clone()
                            },
                            error: None,
                        })
                        .collect();
                    events.push(WorkflowEvent::WorkflowCompleted {
                        workflow_id,
                        step_details,
                        success_count: completed_steps,
                        failed_count: 0,
                    });
                }
                Ok(events)
            }
            WorkflowCommand::RecordStepFailed {
                step_index,
                job_id,
                error,
            } => {
                if self.step_outcome_recorded(*step_index, *job_id)? {
                    return Ok(vec![]);
                }
                if status.is_terminal() {
                    return Err(invalid());
                }
                Ok(vec![
                    WorkflowEvent::WorkflowStepFailed {
                        workflow_id,
                        step_index: *step_index,
                        job_id: *job_id,
                        error: error.clone(),
                    },
                    WorkflowEvent::WorkflowFailed {
                        workflow_id,
                        error: error.clone(),
                        failed_step: *step_index,
                    },
                ])
            }
            WorkflowCommand::Cancel { reason } => {
                if status.is_terminal() {
                    return Err(invalid());
                }
                Ok(vec![WorkflowEvent::WorkflowCancelled {
                    workflow_id,
                    reason: reason.clone(),
                }])
            }
        }
    }

    fn step(&self, step_index: u32) -> Result<StepStatus, DomainError> {
        self.steps.get(step_index as usize).copied().ok_or_else(|| {
            DomainError::field(
                "step_index",
                format!(
                    "step {step_index} does not exist (workflow has {} steps)",
                    self.steps.len()
                ),
            )
        })
    }

    /// Checks that `step_index` exists and belongs to `job_id`; true when its outcome
    /// (completed or failed) is already recorded, so a re-delivery changes nothing.
    fn step_outcome_recorded(&self, step_index: u32, job_id: Uuid) -> Result<bool, DomainError> {
        let step = self.step(step_index)?;
        if self.job_id(step_index) != Some(job_id) {
            return Err(DomainError::field(
                "job_id",
                format!("job {job_id} is not the job of step {step_index}"),
            ));
        }
        Ok(matches!(step, StepStatus::Completed | StepStatus::Failed))
    }
}

/// Validates a workflow definition.
fn decide_create(c: &CreateWorkflow) -> Result<Vec<WorkflowEvent>, DomainError> {
    let mut errors = Vec::new();
    if c.workflow_id.is_nil() {
        errors.push(FieldError::new("workflow_id", "workflow_id is required"));
    }
    if c.name.trim().is_empty() {
        errors.push(FieldError::new("name", "name is required"));
    }
    if c.steps.is_empty() {
        errors.push(FieldError::new(
            "steps",
            "a workflow needs at least one step",
        ));
    }
    if c.steps.len() > MAX_STEPS {
        errors.push(FieldError::new(
            "steps",
            format!(
                "a workflow may have at most {MAX_STEPS} steps, got {}",
                c.steps.len()
            ),
        ));
    }
    if c.job_ids.len() != c.steps.len() {
        errors.push(FieldError::new(
            "job_ids",
            format!("{} job ids for {} steps", c.job_ids.len(), c.steps.len()),
        ));
    }
    for (i, step) in c.steps.iter().enumerate() {
        if !validate::is_valid_job_type(&step.job_type) {
            errors.push(FieldError::new(
                format!("steps[{i}].type"),
                validate::job_type_message(&step.job_type),
            ));
        }
        for d in &step.depends_on {
            if *d as usize >= i {
                errors.push(FieldError::new(
                    format!("steps[{i}].depends_on"),
                    format!("step {i} may only depend on earlier steps, got {d}"),
                ));
            }
        }
    }
    if let Some(url) = &c.webhook_url {
        if !validate::is_http_url(url) {
            errors.push(FieldError::new(
                "webhook_url",
                "webhook_url must be an http:// or https:// URL",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(DomainError::Validation(errors));
    }
    Ok(vec![WorkflowEvent::WorkflowCreated(WorkflowCreated {
        workflow_id: c.workflow_id,
        name: c.name.trim().to_owned(),
        description: c.description.clone(),
        steps: c.steps.clone(),
        job_ids: c.job_ids.clone(),
        webhook_url: c.webhook_url.clone(),
        total_steps: c.steps.len() as u32,
    })])
}

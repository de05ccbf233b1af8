//! What queries answer: views of jobs and workflows, pages and stats.
//!
//! Both read sides (Redis + PostgreSQL, and the embedded in-memory one) produce these same
//! shapes, and so does time travel (`as_of_version`, `as_of`), which folds the history
//! with [`JobView::fold`].

pub mod machine;
mod queue;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use jobsource_domain::job::{Job, JobEvent};
use jobsource_domain::workflow::{StepStatus, Workflow};
use jobsource_eventstore::Envelope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use machine::{MachineEntry, MachineQuery, MachineTimes, MachineView, WorkerView};
pub use queue::{PendingEntry, QueueCounts};

mod query;
pub use query::*;

/// Formats a time the way every view shows it (RFC 3339, milliseconds, `Z`).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A job as the read models show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub parameters: Map<String, Value>,
    /// `{capabilities[], gpu_memory}`.
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
    pub result: Option<Value>,
    /// Last error `{code, message}`.
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

/// Event times a view shows beside the folded state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTimes {
    /// First event.
    pub created_at: Option<DateTime<Utc>>,
    /// Last event.
    pub updated_at: Option<DateTime<Utc>>,
    /// First `job_assigned`.
    pub started_at: Option<DateTime<Utc>>,
    /// Terminal event.
    pub completed_at: Option<DateTime<Utc>>,
}

impl JobTimes {
    /// Records the time of `event`.
    pub fn apply(&mut self, event: &JobEvent, at: DateTime<Utc>) {
        self.created_at.get_or_insert(at);
        self.updated_at = Some(at);
        match event {
            JobEvent::JobAssigned { .. } => {
                self.started_at.get_or_insert(at);
            }
            JobEvent::JobCompleted { .. } | JobEvent::JobCancelled { .. } => {
                self.completed_at = Some(at)
            }
            JobEvent::JobFailed { will_retry, .. } if !will_retry => self.completed_at = Some(at),
            _ => {}
        }
    }
}

impl JobView {
    /// The view of a folded job.
    pub fn from_state(job: &Job, times: &JobTimes) -> Option<JobView> {
        let status = job.status?;
        Some(JobView {
            id: job.id,
            job_type: job.job_type.clone(),
            status: status.as_str().to_owned(),
            priority: job.priority,
            progress: job.progress,
            stage: job.stage.clone(),
            prompt: job.prompt.clone(),
            parameters: job.parameters.clone(),
            requirements: job
                .requirements
                .as_ref()
                .and_then(|r| serde_json::to_value(r).ok()),
            webhook_url: job.webhook_url.clone(),
            workflow_id: job.workflow_id,
            step_index: job.step_index,
            depends_on: job.depends_on.clone(),
            worker_id: job.worker_id.clone(),
            machine_id: job.machine_id.clone(),
            attempt: job.attempt,
            retry_count: job.retry_count,
            max_retries: job.max_retries,
            result: job.result.clone(),
            error: job
                .error
                .as_ref()
                .and_then(|e| serde_json::to_value(e).ok()),
            created_at: times.created_at.map(timestamp),
            updated_at: times.updated_at.map(timestamp),
            started_at: times.started_at.map(timestamp),
            completed_at: times.completed_at.map(timestamp),
            available_at: job
                .available_at
                .filter(|_| status == jobsource_domain::job::JobStatus::Pending)
                .map(timestamp),
            lease_expires_at: job
                .lease_expires_at
                .filter(|_| {
                    matches!(
                        status,
                        jobsource_domain::job::JobStatus::Assigned
                            | jobsource_domain::job::JobStatus::Running
                    )
                })
                .map(timestamp),
            version: job.version,
        })
    }

    /// Folds a job's envelopes (in version order) into its view; events that do not
    /// decode are skipped with a warning (the store upcasts, so this means corruption).
    pub fn fold<'a>(history: impl IntoIterator<Item = &'a Envelope>) -> Option<JobView> {
        let mut job = Job::default();
        let mut times = JobTimes::default();
        for env in history {
            match jobsource_eventstore::typed::job_event_from(env) {
                Ok(event) => {
                    job.apply(&event);
                    times.apply(&event, env.occurred_at);
                }
                Err(e) => tracing::warn!(error = %e, "undecodable job event skipped in fold"),
            }
        }
        JobView::from_state(&job, &times)
    }
}

/// One step of a workflow with its job's live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub result: Option<Value>,
    /// The job's error.
    pub error: Option<Value>,
    /// First assignment of the job.
    pub started_at: Option<String>,
    /// Terminal time of the job.
    pub completed_at: Option<String>,
}

/// A workflow with its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Percentage of completed steps.
pub fn progress_percentage(completed: u32, total: u32) -> u32 {
    completed
        .saturating_mul(100)
        .checked_div(total)
        .unwrap_or(0)
}

impl WorkflowView {
    /// The view of a folded workflow; `job` looks up each step job's view.
    pub fn from_state(
        wf: &Workflow,
        created_at: Option<DateTime<Utc>>,
        updated_at: Option<DateTime<Utc>>,
        completed_at: Option<DateTime<Utc>>,
        job: impl Fn(Uuid) -> Option<JobView>,
    ) -> Option<WorkflowView> {
        let status = wf.status?;
        let def = wf.definition.as_ref()?;
        let completed = wf
            .steps
            .iter()
            .filter(|s| **s == StepStatus::Completed)
            .count() as u32;
        let steps = def
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| {
                let job_id = *def.job_ids.get(i)?;
                Some(StepView::new(
                    i as u32,
                    job_id,
                    &spec.job_type,
                    &spec.depends_on,
                    job(job_id),
                ))
            })
            .collect();
        Some(WorkflowView {
            id: def.workflow_id,
            name: def.name.clone(),
            description: def.description.clone(),
            status: status.as_str().to_owned(),
            total_steps: def.total_steps,
            completed_steps: completed,
            progress_percentage: progress_percentage(completed, def.total_steps),
            job_ids: def.job_ids.clone(),
            webhook_url: def.webhook_url.clone(),
            error: wf.errors.iter().flatten().next().cloned(),
            created_at: created_at.map(timestamp),
            updated_at: updated_at.map(timestamp),
            completed_at: completed_at.map(timestamp),
            version: wf.version,
            steps,
        })
    }
}

impl StepView {
    /// A step with its job's view, if the job is visible yet.
    pub fn new(
        step_index: u32,
        job_id: Uuid,
        job_type: &str,
        depends_on: &[u32],
        job: Option<JobView>,
    ) -> StepView {
        match job {
            Some(j) => StepView {
                step_index,
                job_id,
                job_type: job_type.to_owned(),
                depends_on: depends_on.to_vec(),
                status: j.status,
                progress: j.progress,
                result: j.result,
                error: j.error,
                started_at: j.started_at,
                completed_at: j.completed_at,
            },
            None => StepView {
                step_index,
                job_id,
                job_type: job_type.to_owned(),
                depends_on: depends_on.to_vec(),
                status: "waiting".into(),
                progress: 0,
                result: None,
                error: None,
                started_at: None,
                completed_at: None,
            },
        }
    }
}

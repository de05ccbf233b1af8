//! Job state (a fold of job events) and the decision function.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::command::{JobCommand, SubmitJob, MAX_RETRIES_LIMIT};
use super::event::{JobError, JobEvent, JobSubmitted, Requirements};
use crate::error::{DomainError, FieldError};
use crate::validate;

mod submit;
use submit::*;

/// Lifecycle status of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Has unmet dependencies.
    Waiting,
    /// Queued for a worker.
    Pending,
    /// Taken by a worker.
    Assigned,
    /// The worker reported progress.
    Running,
    /// Done (terminal).
    Completed,
    /// Failed without retry (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
}

impl JobStatus {
    /// Completed, failed and cancelled accept no further commands.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The status name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Pending => "pending",
            JobStatus::Assigned => "assigned",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one job: the fold of its events. `Default` is "does not exist yet".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Job {
    /// Job id (nil until submitted).
    pub id: Uuid,
    /// Status; `None` before submission.
    pub status: Option<JobStatus>,
    /// Job type.
    pub job_type: String,
    /// Prompt.
    pub prompt: Option<String>,
    /// Parameters.
    pub parameters: Map<String, Value>,
    /// Priority.
    pub priority: u8,
    /// Requirements.
    pub requirements: Option<Requirements>,
    /// Webhook target.
    pub webhook_url: Option<String>,
    /// Owning workflow.
    pub workflow_id: Option<Uuid>,
    /// Step index.
    pub step_index: Option<u32>,
    /// Dependencies.
    pub depends_on: Vec<Uuid>,
    /// Retry budget.
    pub max_retries: u32,
    /// Number of assignments so far.
    pub attempt: u32,
    /// Number of failures so far.
    pub retry_count: u32,
    /// Progress of the current attempt.
    pub progress: u8,
    /// Current stage.
    pub stage: Option<String>,
    /// Worker of the current/last attempt.
    pub worker_id: Option<String>,
    /// Machine of the current/last attempt.
    pub machine_id: Option<String>,
    /// Result once completed.
    pub result: Option<Value>,
    /// Last error.
    pub error: Option<JobError>,
    /// Not claimable before this time (delay or retry backoff); `None`: at once.
    pub available_at: Option<DateTime<Utc>>,
    /// Lease deadline of the current attempt as assigned (renewals are not events).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Number of events applied (the stream version).
    pub version: u64,
}

/// Error code of the failure recorded when a lease runs out.
pub const LEASE_EXPIRED: &str = "LEASE_EXPIRED";

impl Job {
    /// Folds events into a state.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a JobEvent>) -> Job {
        let mut job = Job::default();
        for e in events {
            job.apply(e);
        }
        job
    }

    /// Applies one event. Infallible: events are facts already decided.
    pub fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::JobSubmitted(s) => {
                self.id = s.job_id;
                self.status = Some(s.status);
                self.job_type = s.job_type.clone();
                self.prompt = s.prompt.clone();
                self.parameters = s.parameters.clone();
                self.priority = s.priority;
                self.requirements = Some(s.requirements.clone());
                self.webhook_url = s.webhook_url.clone();
                self.workflow_id = s.workflow_id;
                self.step_index = s.step_index;
                self.depends_on = s.depends_on.clone();
                self.max_retries = s.max_retries;
                self.available_at = s.available_at;
            }
            JobEvent::JobReleased { .. } => self.status = Some(JobStatus::Pending),
            JobEvent::JobAssigned {
                worker_id,
                machine_id,
                attempt,
                lease_expires_at,
                ..
            } => {
                self.status = Some(JobStatus::Assigned);
                self.worker_id = Some(worker_id.clone());
                self.machine_id = Some(machine_id.clone());
                self.attempt = *attempt;
                self.progress = 0;
                self.stage = None;
                self.available_at = None;
                self.lease_expires_at = *lease_expires_at;
            }
            JobEvent::JobProgress {
                progress, stage, ..
            } => {
                self.status = Some(JobStatus::Running);
                self.progress = *progress;
                if stage.is_some() {
                    self.stage = stage.clone();
                }
            }
            JobEvent::JobCompleted { result, .. } => {
                self.lease_expires_at = None;
                self.status = Some(JobStatus::Completed);
                self.progress = 100;
                self.result = Some(result.clone());
            }
            JobEvent::JobFailed {
                error,
                retry_count,
                will_retry,
                available_at,
                ..
            } => {
                self.error = Some(error.clone());
                self.retry_count = *retry_count;
                self.lease_expires_at = None;
                if *will_retry {
                    self.status = Some(JobStatus::Pending);
                    self.progress = 0;
                    self.stage = None;
                    self.available_at = *available_at;
                } else {
                    self.status = Some(JobStatus::Failed);
                }
            }
            // The accounting is in the `job_failed` that always follows it.
            JobEvent::JobLeaseExpired { .. } => {}
            JobEvent::JobCancelled { .. } => self.status = Some(JobStatus::Cancelled),
        }
        self.version += 1;
    }

    /// Decides a command against this state.
    pub fn decide(&self, command: &JobCommand) -> Result<Vec<JobEvent>, DomainError> {
        let job_id = self.id;
        let Some(status) = self.status else {
            return match command {
                JobCommand::Submit(submit) => decide_submit(submit),
                _ => Err(DomainError::NotFound { kind: "job" }),
            };
        };
        let invalid = || DomainError::InvalidTransition {
            kind: "job",
            command: command.name(),
            status: status.to_string(),
        };
        use JobStatus::*;
        match command {
            JobCommand::Submit(_) => Err(DomainError::AlreadyExists { kind: "job" }),
            JobCommand::Release => match status {
                Waiting => Ok(vec![JobEvent::JobReleased { job_id }]),
                _ => Err(invalid()),
            },
            JobCommand::Assign(a) => {
                if status != Pending {
                    return Err(invalid());
                }
                let mut errors = Vec::new();
                if a.worker_id.trim().is_empty() {
                    errors.push(FieldError::new("worker_id", "worker_id is required"));
                }
                if a.machine_id.trim().is_empty() {
                    errors.push(FieldError::new("machine_id", "machine_id is required"));
                }
                if !errors.is_empty() {
                    return Err(DomainError::Validation(errors));
                }
                Ok(vec![JobEvent::JobAssigned {
                    job_id,
                    worker_id: a.worker_id.clone(),
                    machine_id: a.machine_id.clone(),
                    attempt: self.attempt + 1,
                    lease_expires_at: a.lease_expires_at,
                }])
            }
            JobCommand::ReportProgress(p) => {
                if !matches!(status, Assigned | Running) {
                    return Err(invalid());
                }
                self.check_holder(p.worker_id.as_deref(), status)?;
                if p.progress > 100 {
                    return Err(DomainError::field("progress", "progress must be 0..=100"));
                }
                if p.progress < self.progress {
                    return Err(DomainError::field(
                        "progress",
                        format!(
                            "progress may not decrease within an attempt (current {}, got {})",
                            self.progress, p.progress
                        ),
                    ));
                }
                Ok(vec![JobEvent::JobProgress {
                    job_id,
                    progress: p.progress,
                    stage: p.stage.clone(),
                    message: p.message.clone(),
                }])
            }
            JobCommand::Complete(c) => match status {
                Assigned | Running => {
                    self.check_holder(c.worker_id.as_deref(), status)?;
                    Ok(vec![JobEvent::JobCompleted {
                        job_id,
                        result: c.result.clone(),
                        duration_ms: c.duration_ms,
                    }])
                }
                _ => Err(invalid()),
            },
            JobCommand::ExpireLease(x) => {
                if !matches!(status, Assigned | Running) || x.attempt != self.attempt {
                    return Err(invalid());
                }
                let retry_count = self.retry_count + 1;
                let will_retry = retry_count <= self.max_retries;
                let worker_id = self.worker_id.clone().unwrap_or_default();
                let reason = x.reason.as_deref().unwrap_or("lease expired");
                Ok(vec![
                    JobEvent::JobLeaseExpired {
                        job_id,
                        attempt: x.attempt,
                        worker_id: worker_id.clone(),
                        machine_id: self.machine_id.clone().unwrap_or_default(),
                        will_retry,
                    },
                    JobEvent::JobFailed {
                        job_id,
                        error: JobError {
                            code: LEASE_EXPIRED.to_owned(),
                            message: format!(
                                "attempt {} of worker {worker_id}: {reason}",
                                x.attempt
                            ),
                        },
                        retryable: true,
                        retry_count,
                        will_retry,
                        available_at: if will_retry { x.retry_at } else { None },
                    },
                ])
            }
            JobCommand::Fail(f) => {
                if !matches!(status, Assigned | Running) {
                    return Err(invalid());
                }
                self.check_holder(f.worker_id.as_deref(), status)?;
                if f.error.code.trim().is_empty() {
                    return Err(DomainError::field("error.code", "error.code is required"));
                }
                let retry_count = self.retry_count + 1;
                let will_retry = f.retryable && retry_count <= self.max_retries;
                Ok(vec![JobEvent::JobFailed {
                    job_id,
                    error: f.error.clone(),
                    retryable: f.retryable,
                    retry_count,
                    will_retry,
                    available_at: if will_retry { f.retry_at } else { None },
                }])
            }
            JobCommand::Cancel(c) => match status {
                Waiting | Pending => Ok(vec![JobEvent::JobCancelled {
                    job_id,
                    reason: c.reason.clone(),
                }]),
                _ => Err(invalid()),
            },
        }
    }

    /// A report naming a worker is accepted only from the worker holding the job.
    fn check_holder(&self, worker_id: Option<&str>, status: JobStatus) -> Result<(), DomainError> {
        match worker_id {
            Some(w) if self.worker_id.as_deref() != Some(w) => Err(DomainError::NotHolder {
                kind: "job",
                worker_id: w.to_owned(),
                status: status.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// True once the job is in a terminal status.
    pub fn is_terminal(&self) -> bool {
        self.status.is_some_and(JobStatus::is_terminal)
    }
}

//! The reactions: one event in, zero or more commands out (SPEC section 2, "Orchestration").
//!
//! Every decision is made against the current, store-folded state of the targets (not
//! against the event alone), and every command carries the idempotency key
//! `orch:<causing event id>:<action>:<target>`. Together they make handling an event twice
//! (a crash before the checkpoint moved, two orchestrators, a replay) change nothing: the
//! key returns the recorded result, and a command whose effect already happened is
//! refused by the domain with an error that [`settled`] reads as success.

use jobsource_domain::job::{CancelJob, Job, JobCommand, JobEvent, JobStatus};
use jobsource_domain::workflow::{Workflow, WorkflowCommand, WorkflowEvent};
use jobsource_domain::DomainError;
use jobsource_eventstore::typed::{from_envelope, EventPayload};
use jobsource_eventstore::{Idempotency, RecordedEvent};
use uuid::Uuid;

use super::Reactor;
use crate::service::{fingerprint, step_submissions, CommandContext, ServiceError};

/// Event types the orchestrator reacts to; everything else only moves the checkpoint.
pub(super) fn reacts_to(event_type: &str) -> bool {
    matches!(
        event_type,
        "workflow_created"
            | "workflow_cancelled"
            | "job_submitted"
            | "job_assigned"
            | "job_completed"
            | "job_failed"
    )
}

/// Reads the typed payload; a payload that does not decode is a real fault (never skipped).
fn decode<E: EventPayload>(event: &RecordedEvent) -> Result<E, ServiceError> {
    from_envelope(&event.envelope).map_err(|e| ServiceError::Internal(e.to_string()))
}

/// The event being handled: source of the ids every command it causes carries.
struct Cause<'a> {
    event: &'a RecordedEvent,
}

impl Cause<'_> {
    /// The context of one command: correlation from the causing event, the event as its
    /// causation, and a key that is the same on every delivery of this event.
    fn ctx(&self, action: &str, target: Uuid, request: &[u8]) -> CommandContext {
        let env = &self.event.envelope;
        let key = format!("orch:{}:{action}:{target}", env.event_id);
        let mut body = Vec::with_capacity(key.len() + 1 + request.len());
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(request);
        CommandContext {
            correlation_id: env.correlation_id.clone(),
            causation_id: Some(env.event_id.to_string()),
            idempotency: Some(Idempotency::new(key, fingerprint(&body))),
            expected_version: None,
            actor: Some("orchestrator".into()),
        }
    }

    /// The context for commands that bring their own idempotency key (step submissions).
    fn plain_ctx(&self) -> CommandContext {
        let env = &self.event.envelope;
        CommandContext {
            correlation_id: env.correlation_id.clone(),
            causation_id: Some(env.event_id.to_string()),
            idempotency: None,
            expected_version: None,
            actor: Some("orchestrator".into()),
        }
    }
}

/// Reads a command's error as "already done" where it means that the effect the
/// orchestrator wants is in place (or can no longer apply):
///
/// - `InvalidTransition`: the job is already released, cancelled or terminal, the
///   workflow already terminal;
/// - `AlreadyExists`: the step job was submitted already;
/// - `NotFound`: the target does not exist (nothing to release or cancel).
fn settled<T>(
    result: Result<T, ServiceError>,
    action: &str,
    target: Uuid,
) -> Result<(), ServiceError> {
    match result {
        Ok(_) => Ok(()),
        Err(ServiceError::Domain(
            e @ (DomainError::InvalidTransition { .. }
            | DomainError::AlreadyExists { .. }
            | DomainError::NotFound { .. }),
        )) => {
            tracing::debug!(action, %target, reason = %e, "nothing to do");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Reactor {
    /// Runs the reactions to one event. Errors are returned untouched; the caller decides
    /// between waiting (transient), retrying and stalling.
    pub(super) async fn react(&self, event: &RecordedEvent) -> Result<(), ServiceError> {
        let cause = Cause { event };
        match event.envelope.event_type.as_str() {
            "workflow_created" => self.on_workflow_created(&cause).await,
            "workflow_cancelled" => self.on_workflow_cancelled(&cause).await,
            "job_submitted" => self.on_job_submitted(&cause).await,
            "job_assigned" => self.on_job_assigned(&cause).await,
            "job_completed" => self.on_job_completed(&cause).await,
            "job_failed" => self.on_job_failed(&cause).await,
            _ => Ok(()),
        }
    }

    /// Submits every step's job. The API path does this before answering, so normally
    /// every submission replays its recorded result; this is the crash-recovery path.
    async fn on_workflow_created(&self, cause: &Cause<'_>) -> Result<(), ServiceError> {
        let event: WorkflowEvent = decode(cause.event)?;
        // Folding the creation event alone gives the definition exactly as the API path
        // saw it, so the submissions (and their fingerprints) are identical.
        let workflow = Workflow::from_events(std::iter::once(&event));
        let ctx = cause.plain_ctx();
        for submit in step_submissions(&workflow) {
            let job_id = submit.job_id;
            settled(
                self.service.submit_step(submit, &ctx).await,
                "submit",
                job_id,
            )?;
        }
        Ok(())
    }

    /// Cancels the workflow's jobs that have not started.
    async fn on_workflow_cancelled(&self, cause: &Cause<'_>) -> Result<(), ServiceError> {
        let WorkflowEvent::WorkflowCancelled { workflow_id, .. } = decode(cause.event)? else {
            return Err(ServiceError::Internal(
                "workflow_cancelled payload decoded as another event".into(),
            ));
        };
        let workflow = self.service.load_workflow(workflow_id).await?;
        self.cancel_unstarted(cause, &workflow, "workflow cancelled")
            .await
    }

    /// Indexes the job under each dependency, then releases it if they are all done.
    ///
    /// The order matters: the completion of a dependency may be handled at the same time
    /// (another partition, another orchestrator). Writing the index before reading the
    /// dependencies means either this handler sees the completion, or the completion's
    /// handler sees this job in the index; both may release, and the second is refused.
    async fn on_job_submitted(&self, cause: &Cause<'_>) -> Result<(), ServiceError> {
        let JobEvent::JobSubmitted(submitted) = decode(cause.event)? else {
            return Err(ServiceError::Internal(
                "job_submitted payload decoded as another event".into(),
            ));
        };
        if submitted.depends_on.is_empty() {
            return Ok(());
        }
        for dependency in &submitted.depends_on {
            self.state
                .add_dependent(*dependency, submitted.job_id)
                .await?;
        }
        self.release_if_ready(cause, submitted.job_id).await
    }

    /// Records that a workflow step started (re-assignments after a retry change nothing).
    async fn on_job_assigned(&self, cause: &Cause<'_>) -> Result<(), ServiceError> {
        let job_id = decode::<JobEvent>(cause.event)?.job_id();
        let job = self.service.job_definition(job_id).await?;
        let Some((workflow, step_index)) = self.step_of(&job).await? else {
            return Ok(());
        };
        let ctx = cause.ctx(
            "step-started",
            workflow.id,
            step_index.to_string().as_bytes(),
        );
        let result = self
            .service
            .workflow(
                workflow.id,
                WorkflowCommand::RecordStepStarted { step_index },
                &ctx,
            )
            .await;
        settled(result, "record step started", workflow.id)
    }

    /// Records the step (for workflow jobs), then releases every indexed dependent whose
    /// dependencies are now all completed: workflow steps and standalone jobs alike.
    async fn on_job_completed(&self, cause: &Cause<'_>) -> Result<(), ServiceError> {
        let JobEvent::JobCompleted { job_id, result, .. } = decode(cause.event)? else {
            return Err(ServiceError::Internal(
                "job_completed payload decoded as another event".into(),
            ));
        };
        let job = self.service.job_definition(job_id).await?;
        if let Some((workflow, step_index)) = self.step_of(&job).await? {
            let request = serde_json::to_vec(&(step_index, job_id, &result))
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            let ctx = cause.ctx("step-completed", workflow.id, &request);
            let command = WorkflowCommand::RecordStepCompleted {
                step_index,
                job_id,
                result,
            };
            // On a workflow that already failed or was cancelled this is refused (and fine):
            // a step that was running when it ended may still finish.
            settled(
                self.service.workflow(workflow.id, command, &ctx).await,
                "record step completed",
                workflow.id,
            )?;
        }
        for dependent in self.state.dependents(job_id).await? {
            self.release_if_ready(cause, dependent).await?;
        }
        Ok(())
    }

    /// A terminal failure of a workflow step fails the workflow and cancels its jobs that
    /// have not started. A retried failure (`will_retry`) changes nothing here.
    ///
    /// A standalone job's terminal failure (or cancellation) does nothing to the jobs that
    /// depend on it: they stay `waiting`, visibly blocked, for a client to cancel or to keep
    /// (the SPEC defines no cascade for them, and cancelling on the client's behalf would
    /// lose the choice). Workflows get the cascade because their steps belong together.
    async fn on_job_failed(&self, cause: &Cause<'_>) -> Result<(), ServiceError> {
        let JobEvent::JobFailed {
            job_id,
            error,
            will_retry,
            ..
        } = decode(cause.event)?
        else {
            return Err(ServiceError::Internal(
                "job_failed payload decoded as another event".into(),
            ));
        };
        if will_retry {
            return Ok(());
        }
        let job = self.service.job_definition(job_id).await?;
        let Some((workflow, step_index)) = self.step_of(&job).await? else {
            return Ok(());
        };
        let error =
            serde_json::to_value(&error).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let request = serde_json::to_vec(&(step_index, job_id, &error))
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let ctx = cause.ctx("step-failed", workflow.id, &request);
        let command = WorkflowCommand::RecordStepFailed {
            step_index,
            job_id,
            error,
        };
        settled(
            self.service.workflow(workflow.id, command, &ctx).await,
            "record step failed",
            workflow.id,
        )?;
        // Cancel even when the workflow had already ended otherwise: its unstarted jobs
        // must not run either way.
        self.cancel_unstarted(cause, &workflow, "workflow failed")
            .await
    }

    /// The workflow `job` is a step of, and its step index, when the job claims a workflow
    /// that really lists it. The workflow's own definition is authoritative: a job naming a
    /// workflow that does not know it is treated as standalone (and logged), because no
    /// command on that workflow could succeed.
    async fn step_of(&self, job: &Job) -> Result<Option<(Workflow, u32)>, ServiceError> {
        let Some(workflow_id) = job.workflow_id else {
            return Ok(None);
        };
        let workflow = self.service.load_workflow(workflow_id).await?;
        match workflow.step_of(job.id) {
            Some(step) => Ok(Some((workflow, step))),
            None => {
                tracing::warn!(job_id = %job.id, %workflow_id,
                    "job names a workflow that does not list it; treated as standalone");
                Ok(None)
            }
        }
    }

    /// Releases `job_id` if it is waiting and every dependency is completed.
    ///
    /// A dependency that does not exist (yet) counts as not completed: the job keeps
    /// waiting. A step of a workflow that already failed or was cancelled is not released:
    /// that workflow's cascade cancels it instead.
    async fn release_if_ready(&self, cause: &Cause<'_>, job_id: Uuid) -> Result<(), ServiceError> {
        let job = self.service.load_job(job_id).await?;
        if job.status != Some(JobStatus::Waiting) {
            return Ok(());
        }
        for dependency in &job.depends_on {
            let dep = self.service.load_job(*dependency).await?;
            if dep.status != Some(JobStatus::Completed) {
                return Ok(());
            }
        }
        if let Some(workflow_id) = job.workflow_id {
            let workflow = self.service.load_workflow(workflow_id).await?;
            if workflow.is_terminal() {
                tracing::debug!(%job_id, %workflow_id, "workflow ended; step not released");
                return Ok(());
            }
        }
        let ctx = cause.ctx("release", job_id, b"");
        settled(
            self.service.job(job_id, JobCommand::Release, &ctx).await,
            "release",
            job_id,
        )
    }

    /// Cancels each of the workflow's jobs that is still waiting or pending. Assigned and
    /// running jobs are left to finish (their outcome is then refused by the workflow).
    async fn cancel_unstarted(
        &self,
        cause: &Cause<'_>,
        workflow: &Workflow,
        reason: &str,
    ) -> Result<(), ServiceError> {
        let job_ids = workflow
            .definition
            .as_ref()
            .map(|d| d.job_ids.clone())
            .unwrap_or_default();
        for job_id in job_ids {
            let job = self.service.load_job(job_id).await?;
            if !matches!(job.status, Some(JobStatus::Waiting | JobStatus::Pending)) {
                continue;
            }
            let command = JobCommand::Cancel(CancelJob {
                reason: Some(reason.to_owned()),
            });
            let ctx = cause.ctx("cancel", job_id, reason.as_bytes());
            settled(
                self.service.job(job_id, command, &ctx).await,
                "cancel",
                job_id,
            )?;
        }
        Ok(())
    }
}

//! What a planned delivery needs to know beyond its event: the trigger, and the facts
//! folded from the job's or workflow's history (step ends, webhook url, owner).

use super::*;

/// A delivered event, decoded.
#[derive(Debug)]
pub(super) enum Trigger {
    JobCompleted {
        job_id: Uuid,
        result: Value,
        duration_ms: Option<u64>,
    },
    JobFailed {
        job_id: Uuid,
        error: JobError,
        retry_count: u32,
    },
    WorkflowCompleted {
        workflow_id: Uuid,
        step_details: Vec<StepDetail>,
        success_count: u32,
        failed_count: u32,
    },
    WorkflowFailed {
        workflow_id: Uuid,
        error: Value,
        failed_step: u32,
    },
}

/// How a step ended, from its `workflow_step_completed` / `workflow_step_failed`.
#[derive(Debug, Clone)]
pub(super) struct StepEnd {
    pub(super) job_id: Uuid,
    pub(super) completed: bool,
    pub(super) result: Value,
    pub(super) error: Value,
    pub(super) at: DateTime<Utc>,
}

/// What a stream's history (up to the delivered event) tells the body.
#[derive(Debug, Default)]
pub(super) struct Facts {
    /// Target (blank = none).
    pub(super) url: Option<String>,
    /// When the aggregate was created (its first event).
    pub(super) created_at: Option<DateTime<Utc>>,
    /// Job: worker, machine and time of the last `job_assigned`.
    pub(super) worker_id: Option<String>,
    pub(super) machine_id: Option<String>,
    pub(super) assigned_at: Option<DateTime<Utc>>,
    /// Workflow: name, step count and step jobs from `workflow_created`.
    pub(super) name: Option<String>,
    pub(super) total_steps: Option<u32>,
    pub(super) job_ids: Vec<Uuid>,
    /// Workflow: steps started and ended, by index.
    pub(super) started: HashSet<u32>,
    pub(super) ended: HashMap<u32, StepEnd>,
}

impl Facts {
    pub(super) fn of(history: &[RecordedEvent]) -> Result<Facts, ProjectionError> {
        let mut facts = Facts::default();
        let Some(first) = history.first() else {
            return Ok(facts);
        };
        facts.created_at = Some(first.envelope.occurred_at);
        if !matches!(
            first.envelope.event_type.as_str(),
            "job_submitted" | "workflow_created"
        ) {
            tracing::warn!(stream = %first.envelope.stream, first = %first.envelope.event_type,
                "stream does not start with a creation event; no webhook");
        }
        for recorded in history {
            let env = &recorded.envelope;
            let decode = |e| decode_error(recorded, e);
            match env.event_type.as_str() {
                "job_submitted" if env.version == 1 => {
                    if let JobEvent::JobSubmitted(s) = from_envelope(env).map_err(decode)? {
                        facts.url = s.webhook_url;
                    }
                }
                "job_assigned" => {
                    if let JobEvent::JobAssigned {
                        worker_id,
                        machine_id,
                        ..
                    } = from_envelope(env).map_err(decode)?
                    {
                        facts.worker_id = Some(worker_id);
                        facts.machine_id = Some(machine_id);
                        facts.assigned_at = Some(env.occurred_at);
                    }
                }
                "workflow_created" if env.version == 1 => {
                    if let WorkflowEvent::WorkflowCreated(c) = from_envelope(env).map_err(decode)? {
                        facts.url = c.webhook_url;
                        facts.name = Some(c.name);
                        facts.total_steps = Some(c.total_steps);
                        facts.job_ids = c.job_ids;
                    }
                }
                "workflow_step_started" => {
                    if let WorkflowEvent::WorkflowStepStarted { step_index, .. } =
                        from_envelope(env).map_err(decode)?
                    {
                        facts.started.insert(step_index);
                    }
                }
                "workflow_step_completed" => {
                    if let WorkflowEvent::WorkflowStepCompleted {
                        step_index,
                        job_id,
                        result,
                        ..
                    } = from_envelope(env).map_err(decode)?
                    {
                        facts.ended.insert(
                            step_index,
                            StepEnd {
                                job_id,
                                completed: true,
                                result,
                                error: Value::Null,
                                at: env.occurred_at,
                            },
                        );
                    }
                }
                "workflow_step_failed" => {
                    if let WorkflowEvent::WorkflowStepFailed {
                        step_index,
                        job_id,
                        error,
                        ..
                    } = from_envelope(env).map_err(decode)?
                    {
                        facts.ended.insert(
                            step_index,
                            StepEnd {
                                job_id,
                                completed: false,
                                result: Value::Null,
                                error,
                                at: env.occurred_at,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        facts.url = facts.url.filter(|u| !u.trim().is_empty());
        Ok(facts)
    }

    /// Milliseconds from `since` to `until` (0 when unknown or negative).
    pub(super) fn millis(since: Option<DateTime<Utc>>, until: DateTime<Utc>) -> u64 {
        since.map_or(0, |s| {
            u64::try_from((until - s).num_milliseconds()).unwrap_or(0)
        })
    }

    /// The seed's `metadata` of a job.
    pub(super) fn job_metadata(&self, correlation_id: &str) -> Value {
        json!({
            "machine_id": self.machine_id,
            "worker_id": self.worker_id,
            "correlation_id": correlation_id,
        })
    }

    /// A workflow's `step_details` as the seed has them, from the history: every step
    /// (by `job_ids`), ended ones with their outcome and `completed_at` (when the workflow
    /// recorded the end), the others `running` (started) or `pending`.
    pub(super) fn step_details(&self) -> Vec<Value> {
        let total = self.total_steps.map_or(self.job_ids.len(), |t| t as usize);
        (0..total)
            .map(|i| {
                let index = i as u32;
                match self.ended.get(&index) {
                    Some(end) => json!({
                        "step_index": index,
                        "job_id": end.job_id,
                        "status": if end.completed { "completed" } else { "failed" },
                        "result": end.result,
                        "error": end.error,
                        "completed_at": timestamp(end.at),
                    }),
                    None => json!({
                        "step_index": index,
                        "job_id": self.job_ids.get(i),
                        "status": if self.started.contains(&index) { "running" } else { "pending" },
                        "result": null,
                        "error": null,
                        "completed_at": null,
                    }),
                }
            })
            .collect()
    }
}

//! The operations each job and workflow event turns into (hash fields, queue sets, the
//! pending zset), as the seed's state synchronizer writes them.

use super::*;

impl RedisReadModel {
    pub(super) fn ops_for(&self, e: &RecordedEvent) -> Result<Option<Ops>, ProjectionError> {
        let env = &e.envelope;
        let bad = |err: jobsource_eventstore::DecodeError| ProjectionError::Apply {
            position: e.position.to_string(),
            message: err.to_string(),
        };
        let now = env
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if env.stream.starts_with("job-") {
            let event: JobEvent = from_envelope(env).map_err(bad)?;
            Ok(Some(self.job_ops(&event, now, &env.correlation_id)))
        } else if env.stream.starts_with("workflow-") {
            let event: WorkflowEvent = from_envelope(env).map_err(bad)?;
            Ok(Some(self.workflow_ops(&event, now, &env.correlation_id)))
        } else if env.stream.starts_with("machine-") {
            let event: MachineEvent = from_envelope(env).map_err(bad)?;
            Ok(Some(machine_ops(&self.keys, &event, now)))
        } else {
            Ok(None)
        }
    }

    pub(super) fn job_ops(&self, event: &JobEvent, now: String, correlation_id: &str) -> Ops {
        let id = event.job_id().to_string();
        let k = &self.keys;
        let mut ops = Ops::new(k.job(&id));
        let pending = k.key("jobs:pending");
        let assigned = k.key("jobs:assigned");
        match event {
            JobEvent::JobSubmitted(s) => {
                ops.hset(&[
                    ("id", id.clone()),
                    ("type", s.job_type.clone()),
                    ("status", s.status.as_str().to_owned()),
                    ("priority", s.priority.to_string()),
                    ("progress", "0".into()),
                    (
                        "payload",
                        js(&json!({"prompt": s.prompt, "parameters": s.parameters})),
                    ),
                    ("requirements", js(&s.requirements)),
                    ("webhook_url", s.webhook_url.clone().unwrap_or_default()),
                    (
                        "workflow_id",
                        s.workflow_id.map(|w| w.to_string()).unwrap_or_default(),
                    ),
                    (
                        "step_index",
                        s.step_index.map(|i| i.to_string()).unwrap_or_default(),
                    ),
                    ("max_retries", s.max_retries.to_string()),
                    // Ordered as submitted (the depends_on set below is for lookups).
                    ("depends_on", js(&s.depends_on)),
                    ("retry_count", "0".into()),
                    ("attempt", "0".into()),
                    ("created_at", now.clone()),
                    ("updated_at", now),
                    // The seed's state synchronizer wrote it; readers of its hashes use it.
                    ("correlation_id", correlation_id.to_owned()),
                ]);
                if let Some(t) = s.available_at {
                    ops.hset(&[("available_at", rfc3339(t))]);
                }
                if s.depends_on.is_empty() {
                    ops.op("ZADD", pending, vec![s.priority.to_string(), id.clone()]);
                } else {
                    let deps: Vec<String> = s.depends_on.iter().map(|d| d.to_string()).collect();
                    ops.op("SADD", k.key(&format!("job:{id}:depends_on")), deps.clone());
                    for d in deps {
                        ops.op(
                            "SADD",
                            k.key(&format!("job:{d}:dependents")),
                            vec![id.clone()],
                        );
                    }
                }
                if let Some(w) = s.workflow_id {
                    ops.op("SADD", k.key(&format!("workflow:{w}:jobs")), vec![id]);
                }
            }
            JobEvent::JobReleased { .. } => {
                ops.hset(&[("status", "pending".into()), ("updated_at", now)]);
                ops.op("ZADD_BY_PRIORITY", pending, vec![id]);
            }
            JobEvent::JobAssigned {
                worker_id,
                machine_id,
                attempt,
                lease_expires_at,
                ..
            } => {
                ops.hset(&[
                    ("status", "assigned".into()),
                    ("worker_id", worker_id.clone()),
                    ("machine_id", machine_id.clone()),
                    ("attempt", attempt.to_string()),
                    ("progress", "0".into()),
                    (
                        "lease_expires_at",
                        lease_expires_at.map(rfc3339).unwrap_or_default(),
                    ),
                    ("available_at", String::new()),
                    ("assigned_at", now.clone()),
                    ("updated_at", now.clone()),
                ]);
                ops.op("HSETNX", k.job(&id), vec!["started_at".into(), now]);
                // A new attempt has no stage yet (as in the domain and the other models).
                ops.op("HDEL", k.job(&id), vec!["stage".into()]);
                ops.op("ZREM", pending, vec![id.clone()]);
                ops.op("SADD", assigned, vec![id]);
            }
            JobEvent::JobProgress {
                progress,
                stage,
                message,
                ..
            } => {
                let mut fields = vec![
                    ("status", "running".to_owned()),
                    ("progress", progress.to_string()),
                    ("updated_at", now),
                ];
                if let Some(s) = stage {
                    fields.push(("stage", s.clone()));
                }
                if let Some(m) = message {
                    fields.push(("message", m.clone()));
                }
                ops.hset(&fields);
            }
            JobEvent::JobCompleted {
                result,
                duration_ms,
                ..
            } => {
                ops.hset(&[
                    ("status", "completed".into()),
                    ("progress", "100".into()),
                    ("result", js(result)),
                    // Milliseconds (0 when the worker reported none), as the seed's field.
                    ("duration", duration_ms.unwrap_or(0).to_string()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
                ops.op("SREM", assigned, vec![id.clone()]);
                ops.op("SADD", k.key("jobs:completed"), vec![id]);
            }
            JobEvent::JobFailed {
                error,
                retry_count,
                will_retry,
                available_at,
                ..
            } => {
                ops.op("SREM", assigned, vec![id.clone()]);
                if *will_retry {
                    ops.hset(&[
                        ("status", "pending".into()),
                        ("error", js(error)),
                        ("retry_count", retry_count.to_string()),
                        ("failed_at", now.clone()),
                        ("progress", "0".into()),
                        ("lease_expires_at", String::new()),
                        (
                            "available_at",
                            available_at.map(rfc3339).unwrap_or_default(),
                        ),
                        ("updated_at", now),
                    ]);
                    ops.op("HDEL", k.job(&id), vec!["stage".into()]);
                    ops.op("ZADD_BY_PRIORITY", pending, vec![id]);
                } else {
                    ops.hset(&[
                        ("status", "failed".into()),
                        ("error", js(error)),
                        ("retry_count", retry_count.to_string()),
                        ("failed_at", now.clone()),
                        ("completed_at", now.clone()),
                        ("updated_at", now),
                    ]);
                    ops.op("SADD", k.key("jobs:failed"), vec![id]);
                }
            }
            // Only the envelope's fact: the `job_failed` that follows it does the accounting.
            JobEvent::JobLeaseExpired { .. } => {
                ops.hset(&[("updated_at", now)]);
            }
            JobEvent::JobCancelled { .. } => {
                ops.hset(&[
                    ("status", "cancelled".into()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
                ops.op("ZREM", pending, vec![id]);
            }
        }
        ops
    }

    pub(super) fn workflow_ops(
        &self,
        event: &WorkflowEvent,
        now: String,
        correlation_id: &str,
    ) -> Ops {
        let wid = match event {
            WorkflowEvent::WorkflowCreated(c) => c.workflow_id,
            WorkflowEvent::WorkflowStepStarted { workflow_id, .. }
            | WorkflowEvent::WorkflowStepCompleted { workflow_id, .. }
            | WorkflowEvent::WorkflowCompleted { workflow_id, .. }
            | WorkflowEvent::WorkflowStepFailed { workflow_id, .. }
            | WorkflowEvent::WorkflowFailed { workflow_id, .. }
            | WorkflowEvent::WorkflowCancelled { workflow_id, .. } => *workflow_id,
        }
        .to_string();
        let mut ops = Ops::new(self.keys.workflow(&wid));
        match event {
            WorkflowEvent::WorkflowCreated(c) => {
                ops.hset(&[
                    ("id", wid.clone()),
                    ("name", c.name.clone()),
                    ("description", c.description.clone().unwrap_or_default()),
                    ("status", "pending".into()),
                    ("total_steps", c.total_steps.to_string()),
                    ("completed_steps", "0".into()),
                    ("job_ids", js(&c.job_ids)),
                    ("steps", js(&c.steps)),
                    ("webhook_url", c.webhook_url.clone().unwrap_or_default()),
                    ("created_at", now.clone()),
                    ("updated_at", now),
                    ("correlation_id", correlation_id.to_owned()),
                ]);
                let jobs: Vec<String> = c.job_ids.iter().map(|j| j.to_string()).collect();
                if !jobs.is_empty() {
                    ops.op("SADD", self.keys.key(&format!("workflow:{wid}:jobs")), jobs);
                }
            }
            WorkflowEvent::WorkflowStepStarted { .. } => {
                ops.hset(&[("status", "running".into()), ("updated_at", now)]);
            }
            WorkflowEvent::WorkflowStepCompleted {
                completed_steps, ..
            } => {
                ops.hset(&[
                    ("completed_steps", completed_steps.to_string()),
                    ("updated_at", now),
                ]);
            }
            WorkflowEvent::WorkflowCompleted {
                step_details,
                success_count,
                failed_count,
                ..
            } => {
                ops.hset(&[
                    ("status", "completed".into()),
                    ("step_details", js(step_details)),
                    ("success_count", success_count.to_string()),
                    ("failed_count", failed_count.to_string()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
            }
            WorkflowEvent::WorkflowStepFailed { error, .. } => {
                ops.hset(&[("error", js(error)), ("updated_at", now)]);
            }
            WorkflowEvent::WorkflowFailed { .. } => {
                ops.hset(&[
                    ("status", "failed".into()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
            }
            WorkflowEvent::WorkflowCancelled { .. } => {
                ops.hset(&[
                    ("status", "cancelled".into()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
            }
        }
        ops
    }
}

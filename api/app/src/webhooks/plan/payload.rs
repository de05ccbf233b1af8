//! The delivery bodies (the seed's webhook payload shapes), which events trigger one,
//! and the history reads behind them.

use super::*;

/// The body of a delivery (see the module doc): jobsource's fields, then the seed's.
pub(super) fn payload(id: Uuid, event: &RecordedEvent, trigger: Trigger, facts: &Facts) -> Value {
    let env = &event.envelope;
    let at = timestamp(env.occurred_at);
    let mut body = json!({
        // jobsource's own.
        "delivery_id": id,
        "type": env.event_type,
        "occurred_at": at,
        "position": event.position.to_string(),
        "event": env,
        // The seed's name of `type`.
        "event_type": env.event_type,
    });
    let extra = match trigger {
        Trigger::JobCompleted {
            job_id,
            result,
            duration_ms,
        } => json!({
            "job_id": job_id,
            "status": "completed",
            "result": result,
            "duration": duration_ms
                .unwrap_or_else(|| Facts::millis(facts.assigned_at, env.occurred_at)),
            "completed_at": at,
            "metadata": facts.job_metadata(&env.correlation_id),
        }),
        Trigger::JobFailed {
            job_id,
            error,
            retry_count,
        } => json!({
            "job_id": job_id,
            "status": "failed",
            "result": null,
            "duration": Facts::millis(facts.assigned_at, env.occurred_at),
            "completed_at": at,
            "error": error,
            "retry_count": retry_count,
            "failed_at": at,
            "metadata": facts.job_metadata(&env.correlation_id),
        }),
        Trigger::WorkflowCompleted {
            workflow_id,
            step_details,
            success_count,
            failed_count,
        } => {
            let total = step_details.len();
            let steps: Vec<Value> = step_details
                .into_iter()
                .map(|step| {
                    let ended = facts.ended.get(&step.step_index).map(|e| timestamp(e.at));
                    let mut step = serde_json::to_value(step).unwrap_or(Value::Null);
                    if let Some(step) = step.as_object_mut() {
                        step.insert("completed_at".into(), json!(ended));
                    }
                    step
                })
                .collect();
            json!({
                "workflow_id": workflow_id,
                "name": facts.name,
                "status": "completed",
                "total_steps": facts.total_steps.unwrap_or(total as u32),
                "success_count": success_count,
                "failed_count": failed_count,
                "step_details": steps,
                "duration": Facts::millis(facts.created_at, env.occurred_at),
                "completed_at": at,
                "metadata": { "correlation_id": env.correlation_id },
            })
        }
        Trigger::WorkflowFailed {
            workflow_id,
            error,
            failed_step,
        } => {
            let succeeded = facts.ended.values().filter(|e| e.completed).count();
            let failed = facts.ended.len() - succeeded;
            json!({
                "workflow_id": workflow_id,
                "name": facts.name,
                "status": "failed",
                "total_steps": facts.total_steps.unwrap_or(facts.job_ids.len() as u32),
                "success_count": succeeded,
                "failed_count": failed,
                "step_details": facts.step_details(),
                "error": error,
                "failed_step": failed_step,
                "duration": Facts::millis(facts.created_at, env.occurred_at),
                "completed_at": at,
                "failed_at": at,
                "metadata": { "correlation_id": env.correlation_id },
            })
        }
    };
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

pub(super) fn decode_error(event: &RecordedEvent, e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Apply {
        position: event.position.to_string(),
        message: format!("webhooks cannot decode {}: {e}", event.envelope.event_type),
    }
}

/// `Some(what it says)` when `event` is delivered.
pub(super) fn wanted(event: &RecordedEvent) -> Result<Option<Trigger>, ProjectionError> {
    let env = &event.envelope;
    match env.event_type.as_str() {
        "job_completed" | "job_failed" => {
            let decoded: JobEvent = from_envelope(env).map_err(|e| decode_error(event, e))?;
            Ok(match decoded {
                JobEvent::JobCompleted {
                    job_id,
                    result,
                    duration_ms,
                } => Some(Trigger::JobCompleted {
                    job_id,
                    result,
                    duration_ms,
                }),
                JobEvent::JobFailed {
                    job_id,
                    error,
                    retry_count,
                    will_retry: false,
                    ..
                } => Some(Trigger::JobFailed {
                    job_id,
                    error,
                    retry_count,
                }),
                _ => None,
            })
        }
        "workflow_completed" | "workflow_failed" => {
            let decoded: WorkflowEvent = from_envelope(env).map_err(|e| decode_error(event, e))?;
            Ok(match decoded {
                WorkflowEvent::WorkflowCompleted {
                    workflow_id,
                    step_details,
                    success_count,
                    failed_count,
                } => Some(Trigger::WorkflowCompleted {
                    workflow_id,
                    step_details,
                    success_count,
                    failed_count,
                }),
                WorkflowEvent::WorkflowFailed {
                    workflow_id,
                    error,
                    failed_step,
                } => Some(Trigger::WorkflowFailed {
                    workflow_id,
                    error,
                    failed_step,
                }),
                _ => None,
            })
        }
        _ => Ok(None),
    }
}

/// The history of the stream `event` belongs to, up to and including it (one read).
pub(super) async fn history(
    store: &dyn EventStore,
    event: &RecordedEvent,
) -> Result<Vec<RecordedEvent>, ProjectionError> {
    let env = &event.envelope;
    let limit = usize::try_from(env.version.max(1)).unwrap_or(usize::MAX);
    let history = store.read_stream(&env.stream, 1, limit).await?;
    if history.is_empty() {
        // The event itself was read from the log, so its stream exists: a store that
        // cannot show it is broken, not "no webhook".
        return Err(ProjectionError::Store(StoreError::Invalid(format!(
            "stream {} has no first event",
            env.stream
        ))));
    }
    Ok(history)
}

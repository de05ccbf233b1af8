//! The enqueue step: which events become deliveries, to where, with which body.
//!
//! Shared by the full-mode projection and the embedded subscriber. Pure apart from reading
//! each target stream's first event (its `job_submitted` / `workflow_created`, where the
//! `webhook_url` is), once per stream and batch.

use std::collections::HashMap;

use jobsource_domain::job::JobEvent;
use jobsource_domain::workflow::WorkflowEvent;
use jobsource_eventstore::typed::from_envelope;
use jobsource_eventstore::{EventStore, RecordedEvent, StoreError};
use jobsource_projections::ProjectionError;
use serde_json::{json, Value};

use super::{delivery_id, NewDelivery};

/// The deliveries `events` (one partition, in log order) call for.
///
/// `job_completed`, `job_failed` with `will_retry: false`, `workflow_completed` and
/// `workflow_failed` of an aggregate created with a `webhook_url`. An event that cannot be
/// decoded is an error (the caller retries and eventually stalls; it never skips).
pub async fn plan(
    store: &dyn EventStore,
    events: &[RecordedEvent],
) -> Result<Vec<NewDelivery>, ProjectionError> {
    let mut urls: HashMap<String, Option<String>> = HashMap::new();
    let mut out = Vec::new();
    for event in events {
        let Some(extra) = wanted(event)? else {
            continue;
        };
        let env = &event.envelope;
        let url = match urls.get(&env.stream) {
            Some(url) => url.clone(),
            None => {
                let url = webhook_url(store, event).await?;
                urls.insert(env.stream.clone(), url.clone());
                url
            }
        };
        let Some(url) = url else {
            continue;
        };
        let id = delivery_id(env.event_id, env.occurred_at, &url);
        out.push(NewDelivery {
            id,
            event_id: env.event_id,
            event_type: env.event_type.clone(),
            stream: env.stream.clone(),
            position: event.position.to_string(),
            url,
            payload: payload(id, event, extra),
        });
    }
    Ok(out)
}

/// The body of a delivery: `delivery_id`, `type`, the aggregate id, `occurred_at`, the
/// whole envelope as `event`, and the type's extra fields (`step_details` of
/// `workflow_completed`; `error` and `failed_step` of `workflow_failed`).
fn payload(id: uuid::Uuid, event: &RecordedEvent, extra: Value) -> Value {
    let env = &event.envelope;
    let mut body = json!({
        "delivery_id": id,
        "type": env.event_type,
        "occurred_at": crate::read::view::timestamp(env.occurred_at),
        "position": event.position.to_string(),
        "event": env,
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

fn decode_error(event: &RecordedEvent, e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Apply {
        position: event.position.to_string(),
        message: format!("webhooks cannot decode {}: {e}", event.envelope.event_type),
    }
}

/// `Some(extra fields)` when `event` is delivered.
fn wanted(event: &RecordedEvent) -> Result<Option<Value>, ProjectionError> {
    let env = &event.envelope;
    match env.event_type.as_str() {
        "job_completed" | "job_failed" => {
            let decoded: JobEvent = from_envelope(env).map_err(|e| decode_error(event, e))?;
            Ok(match decoded {
                JobEvent::JobCompleted { job_id, .. } => Some(json!({ "job_id": job_id })),
                JobEvent::JobFailed {
                    job_id,
                    will_retry: false,
                    ..
                } => Some(json!({ "job_id": job_id })),
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
                } => Some(json!({
                    "workflow_id": workflow_id,
                    "step_details": step_details,
                    "success_count": success_count,
                    "failed_count": failed_count,
                })),
                WorkflowEvent::WorkflowFailed {
                    workflow_id,
                    error,
                    failed_step,
                } => Some(json!({
                    "workflow_id": workflow_id,
                    "error": error,
                    "failed_step": failed_step,
                })),
                _ => None,
            })
        }
        _ => Ok(None),
    }
}

/// The `webhook_url` of the aggregate `event` belongs to, from its creation event.
async fn webhook_url(
    store: &dyn EventStore,
    event: &RecordedEvent,
) -> Result<Option<String>, ProjectionError> {
    let stream = &event.envelope.stream;
    let first = store.read_stream(stream, 1, 1).await?;
    let Some(created) = first.first() else {
        // The event itself was read from the log, so its stream exists: a store that
        // cannot show it is broken, not "no webhook".
        return Err(ProjectionError::Store(StoreError::Invalid(format!(
            "stream {stream} has no first event"
        ))));
    };
    let env = &created.envelope;
    let url = match env.event_type.as_str() {
        "job_submitted" => match from_envelope::<JobEvent>(env) {
            Ok(JobEvent::JobSubmitted(s)) => s.webhook_url,
            Ok(_) => None,
            Err(e) => return Err(decode_error(created, e)),
        },
        "workflow_created" => match from_envelope::<WorkflowEvent>(env) {
            Ok(WorkflowEvent::WorkflowCreated(c)) => c.webhook_url,
            Ok(_) => None,
            Err(e) => return Err(decode_error(created, e)),
        },
        other => {
            tracing::warn!(stream = %stream, first = other,
                "stream does not start with a creation event; no webhook");
            None
        }
    };
    Ok(url.filter(|u| !u.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jobsource_domain::job::{CompleteJob, FailJob, JobError, SubmitJob};
    use jobsource_eventstore::{MemoryStore, StoreConfig};
    use uuid::Uuid;

    use super::*;
    use crate::service::{CommandContext, Service};

    async fn all_events(store: &dyn EventStore) -> Vec<RecordedEvent> {
        let mut out = Vec::new();
        for p in 0..store.partitions() {
            out.extend(
                store
                    .read_partition(p, jobsource_eventstore::LogId::ZERO, 10_000)
                    .await
                    .unwrap(),
            );
        }
        out
    }

    #[tokio::test]
    async fn completed_and_terminal_failures_with_a_url_are_planned() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
        let service = Service::new(store.clone(), None);
        let ctx = CommandContext::new();
        let submit = |url: Option<&str>, retries: u32| SubmitJob {
            job_type: "upscale".into(),
            webhook_url: url.map(str::to_owned),
            max_retries: retries,
            ..SubmitJob::default()
        };
        let hooked = service
            .submit_job(submit(Some("http://127.0.0.1:9/h"), 0), &ctx)
            .await
            .unwrap()
            .state
            .id;
        let silent = service
            .submit_job(submit(None, 0), &ctx)
            .await
            .unwrap()
            .state
            .id;
        let failing = service
            .submit_job(submit(Some("http://127.0.0.1:9/f"), 1), &ctx)
            .await
            .unwrap()
            .state
            .id;
        use jobsource_domain::job::{AssignJob, JobCommand};
        let assign = || {
            JobCommand::Assign(AssignJob {
                lease_expires_at: None,
                worker_id: "w".into(),
                machine_id: "m".into(),
            })
        };
        for id in [hooked, silent] {
            service.job(id, assign(), &ctx).await.unwrap();
            service
                .job(
                    id,
                    JobCommand::Complete(CompleteJob {
                        worker_id: None,
                        result: json!({"ok": true}),
                        duration_ms: None,
                    }),
                    &ctx,
                )
                .await
                .unwrap();
        }
        let fail = || {
            JobCommand::Fail(FailJob {
                retry_at: None,
                worker_id: None,
                error: JobError {
                    code: "E".into(),
                    message: "boom".into(),
                },
                retryable: true,
            })
        };
        for _ in 0..2 {
            service.job(failing, assign(), &ctx).await.unwrap();
            service.job(failing, fail(), &ctx).await.unwrap();
        }
        let planned = plan(&*store, &all_events(&*store).await).await.unwrap();
        let got: Vec<(String, String)> = planned
            .iter()
            .map(|d| (d.event_type.clone(), d.url.clone()))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.contains(&("job_completed".into(), "http://127.0.0.1:9/h".into())));
        assert!(got.contains(&("job_failed".into(), "http://127.0.0.1:9/f".into())));
        let done = planned
            .iter()
            .find(|d| d.event_type == "job_completed")
            .unwrap();
        assert_eq!(done.payload["job_id"], json!(hooked));
        assert_eq!(done.payload["delivery_id"], json!(done.id));
        assert_eq!(done.payload["event"]["event_id"], json!(done.event_id));
        assert_eq!(done.payload["event"]["data"]["result"]["ok"], true);
        // Planning again gives the same ids (redelivery is recognisable).
        let again = plan(&*store, &all_events(&*store).await).await.unwrap();
        let ids = |v: &[NewDelivery]| {
            let mut ids: Vec<Uuid> = v.iter().map(|d| d.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&planned), ids(&again));
    }
}

//! The enqueue step: which events become deliveries, to where, with which body.
//!
//! Shared by the full-mode projection and the embedded subscriber. Pure apart from reading
//! each target stream's history up to the delivered event (one read per stream and batch):
//! its creation event (`job_submitted` / `workflow_created`) has the `webhook_url` and the
//! workflow's `name`, its `job_assigned` the worker and machine, its `workflow_step_*`
//! events when each step ended.
//!
//! The body is one superset of two shapes, so that both kinds of receiver parse it:
//! jobsource's own (`delivery_id`, `type`, `occurred_at`, `position`, the envelope as
//! `event`, the aggregate id and the event's fields) and the seed system's webhook service
//! (`event_type`, `status`, `result`, `duration`, `completed_at`, `metadata{machine_id,
//! worker_id, correlation_id}`, plus `error`, `retry_count`, `failed_at` of a failed job and
//! `name`, `total_steps`, `success_count`, `failed_count`, `step_details[]` of a
//! workflow). See the README's Webhooks section for the table.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use jobsource_domain::job::{JobError, JobEvent};
use jobsource_domain::workflow::{StepDetail, WorkflowEvent};
use jobsource_eventstore::typed::from_envelope;
use jobsource_eventstore::{EventStore, RecordedEvent, StoreError};
use jobsource_projections::ProjectionError;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{delivery_id, NewDelivery};
use crate::read::view::timestamp;

mod facts;
mod payload;
use facts::*;
use payload::*;

/// The deliveries `events` (one partition, in log order) call for.
///
/// `job_completed`, `job_failed` with `will_retry: false`, `workflow_completed` and
/// `workflow_failed` of an aggregate created with a `webhook_url`. An event that cannot be
/// decoded is an error (the caller retries and eventually stalls; it never skips).
pub async fn plan(
    store: &dyn EventStore,
    events: &[RecordedEvent],
) -> Result<Vec<NewDelivery>, ProjectionError> {
    // Per stream: what its history (read up to `.0`, a version) says.
    let mut facts: HashMap<String, (u64, Facts)> = HashMap::new();
    let mut out = Vec::new();
    for event in events {
        let Some(trigger) = wanted(event)? else {
            continue;
        };
        let env = &event.envelope;
        let fresh = match facts.get(&env.stream) {
            Some((read_to, _)) => *read_to < env.version,
            None => true,
        };
        if fresh {
            let history = history(store, event).await?;
            facts.insert(env.stream.clone(), (env.version, Facts::of(&history)?));
        }
        let facts = &facts[&env.stream].1;
        let Some(url) = facts.url.clone() else {
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
            payload: payload(id, event, trigger, facts),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jobsource_domain::job::{
        AssignJob, CompleteJob, ExpireLease, FailJob, JobCommand, SubmitJob, LEASE_EXPIRED,
    };
    use jobsource_domain::workflow::{CreateWorkflow, StepSpec, WorkflowCommand};
    use jobsource_eventstore::{MemoryStore, StoreConfig};

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

    fn setup() -> (Arc<dyn EventStore>, Service, CommandContext) {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
        let service = Service::new(store.clone(), None);
        (store, service, CommandContext::new())
    }

    fn submit(url: Option<&str>, retries: u32) -> SubmitJob {
        SubmitJob {
            job_type: "upscale".into(),
            webhook_url: url.map(str::to_owned),
            max_retries: retries,
            ..SubmitJob::default()
        }
    }

    fn assign(worker: &str, machine: &str) -> JobCommand {
        JobCommand::Assign(AssignJob {
            lease_expires_at: None,
            worker_id: worker.into(),
            machine_id: machine.into(),
        })
    }

    fn complete(duration_ms: Option<u64>) -> JobCommand {
        JobCommand::Complete(CompleteJob {
            worker_id: None,
            result: json!({"ok": true}),
            duration_ms,
        })
    }

    fn fail() -> JobCommand {
        JobCommand::Fail(FailJob {
            retry_at: None,
            worker_id: None,
            error: JobError {
                code: "E".into(),
                message: "boom".into(),
            },
            retryable: true,
        })
    }

    async fn submitted(service: &Service, ctx: &CommandContext, job: SubmitJob) -> Uuid {
        service.submit_job(job, ctx).await.unwrap().state.id
    }

    /// The one planned delivery of `event_type` on `stream`.
    async fn planned_one(store: &dyn EventStore, event_type: &str, stream: &str) -> NewDelivery {
        let planned = plan(store, &all_events(store).await).await.unwrap();
        let mut found: Vec<NewDelivery> = planned
            .into_iter()
            .filter(|d| d.event_type == event_type && d.stream == stream)
            .collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        found.remove(0)
    }

    /// jobsource's own fields, on every body.
    fn assert_jobsource_fields(d: &NewDelivery) {
        let body = &d.payload;
        assert_eq!(body["delivery_id"], json!(d.id));
        assert_eq!(body["type"], d.event_type.as_str());
        assert_eq!(body["position"], d.position.as_str());
        assert_eq!(body["event"]["event_id"], json!(d.event_id));
        assert_eq!(body["event"]["type"], d.event_type.as_str());
        assert_eq!(body["event"]["stream"], d.stream.as_str());
        let at = body["occurred_at"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.len() == 24, "{at}");
        // The seed's name of `type`.
        assert_eq!(body["event_type"], d.event_type.as_str());
    }

    /// An ISO-8601 UTC time with milliseconds, as JavaScript's `toISOString()` gives.
    fn assert_iso(v: &Value) {
        let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z') && s.len() == 24,
            "{s}"
        );
    }

    #[tokio::test]
    async fn completed_and_terminal_failures_with_a_url_are_planned() {
        let (store, service, ctx) = setup();
        let hooked = submitted(&service, &ctx, submit(Some("http://127.0.0.1:9/h"), 0)).await;
        let silent = submitted(&service, &ctx, submit(None, 0)).await;
        let failing = submitted(&service, &ctx, submit(Some("http://127.0.0.1:9/f"), 1)).await;
        for id in [hooked, silent] {
            service.job(id, assign("w", "m"), &ctx).await.unwrap();
            service.job(id, complete(None), &ctx).await.unwrap();
        }
        for _ in 0..2 {
            service.job(failing, assign("w", "m"), &ctx).await.unwrap();
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
        // Planning again gives the same ids and bodies (redelivery is recognisable).
        let again = plan(&*store, &all_events(&*store).await).await.unwrap();
        let sorted = |v: &[NewDelivery]| {
            let mut v: Vec<(Uuid, Value)> = v.iter().map(|d| (d.id, d.payload.clone())).collect();
            v.sort_by_key(|(id, _)| *id);
            v
        };
        assert_eq!(sorted(&planned), sorted(&again));
    }

    #[tokio::test]
    async fn job_completed_body_has_the_seed_and_jobsource_fields() {
        let (store, service, ctx) = setup();
        let reported = submitted(&service, &ctx, submit(Some("http://127.0.0.1:9/h"), 0)).await;
        service
            .job(reported, assign("w-1", "gpu-1"), &ctx)
            .await
            .unwrap();
        service
            .job(reported, complete(Some(1200)), &ctx)
            .await
            .unwrap();
        let measured = submitted(&service, &ctx, submit(Some("http://127.0.0.1:9/h"), 0)).await;
        service
            .job(measured, assign("w-2", "gpu-2"), &ctx)
            .await
            .unwrap();
        service.job(measured, complete(None), &ctx).await.unwrap();

        let d = planned_one(&*store, "job_completed", &format!("job-{reported}")).await;
        assert_jobsource_fields(&d);
        let body = &d.payload;
        assert_eq!(body["job_id"], json!(reported));
        assert_eq!(body["event"]["data"]["result"]["ok"], true);
        // The seed's.
        assert_eq!(body["event_type"], "job_completed");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["result"], json!({"ok": true}));
        assert_eq!(body["duration"], 1200, "the reported duration, in ms");
        assert_iso(&body["completed_at"]);
        assert_eq!(body["completed_at"], body["occurred_at"]);
        assert_eq!(body["metadata"]["worker_id"], "w-1");
        assert_eq!(body["metadata"]["machine_id"], "gpu-1");
        assert_eq!(
            body["metadata"]["correlation_id"],
            body["event"]["correlation_id"]
        );
        assert!(body["metadata"]["correlation_id"].is_string());
        for absent in ["error", "retry_count", "failed_at", "workflow_id"] {
            assert!(body.get(absent).is_none(), "{absent}: {body}");
        }

        // Not reported: the time since the assignment (a number of ms, never null).
        let d = planned_one(&*store, "job_completed", &format!("job-{measured}")).await;
        assert!(d.payload["duration"].is_u64(), "{}", d.payload);
        assert_eq!(d.payload["metadata"]["worker_id"], "w-2");
        assert_eq!(d.payload["metadata"]["machine_id"], "gpu-2");
    }

    #[tokio::test]
    async fn terminal_job_failed_body_has_the_seed_and_jobsource_fields() {
        let (store, service, ctx) = setup();
        let id = submitted(&service, &ctx, submit(Some("http://127.0.0.1:9/f"), 1)).await;
        service.job(id, assign("w-1", "gpu-1"), &ctx).await.unwrap();
        service.job(id, fail(), &ctx).await.unwrap();
        // The second attempt runs elsewhere and fails for good.
        service.job(id, assign("w-2", "gpu-2"), &ctx).await.unwrap();
        service.job(id, fail(), &ctx).await.unwrap();

        let d = planned_one(&*store, "job_failed", &format!("job-{id}")).await;
        assert_jobsource_fields(&d);
        let body = &d.payload;
        assert_eq!(body["job_id"], json!(id));
        assert_eq!(body["event"]["data"]["will_retry"], false);
        // The seed's.
        assert_eq!(body["event_type"], "job_failed");
        assert_eq!(body["status"], "failed");
        assert_eq!(body["error"], json!({"code": "E", "message": "boom"}));
        assert_eq!(body["retry_count"], 2);
        assert_iso(&body["failed_at"]);
        assert_eq!(body["failed_at"], body["occurred_at"]);
        assert_eq!(body["completed_at"], body["failed_at"]);
        assert!(body["result"].is_null());
        assert!(body["duration"].is_u64());
        assert_eq!(
            body["metadata"]["worker_id"], "w-2",
            "the failed attempt's worker"
        );
        assert_eq!(body["metadata"]["machine_id"], "gpu-2");
        assert!(body["metadata"]["correlation_id"].is_string());
    }

    #[tokio::test]
    async fn lease_expired_failure_is_a_job_failed_with_code_lease_expired() {
        let (store, service, ctx) = setup();
        let id = submitted(&service, &ctx, submit(Some("http://127.0.0.1:9/l"), 0)).await;
        service.job(id, assign("w-9", "gpu-9"), &ctx).await.unwrap();
        let expire = JobCommand::ExpireLease(ExpireLease {
            attempt: 1,
            retry_at: None,
            reason: Some("machine offline".into()),
            force: true,
        });
        service.job(id, expire, &ctx).await.unwrap();

        let d = planned_one(&*store, "job_failed", &format!("job-{id}")).await;
        assert_jobsource_fields(&d);
        let body = &d.payload;
        assert_eq!(body["status"], "failed");
        assert_eq!(body["error"]["code"], LEASE_EXPIRED);
        assert!(body["error"]["message"].is_string());
        assert_eq!(body["retry_count"], 1);
        assert_iso(&body["failed_at"]);
        assert_eq!(body["metadata"]["worker_id"], "w-9");
        assert_eq!(body["metadata"]["machine_id"], "gpu-9");
        // The expiry itself is not delivered.
        let planned = plan(&*store, &all_events(&*store).await).await.unwrap();
        assert_eq!(planned.len(), 1, "{planned:#?}");
    }

    async fn workflow(service: &Service, ctx: &CommandContext, steps: usize) -> (Uuid, Vec<Uuid>) {
        let step = StepSpec {
            job_type: "upscale".into(),
            prompt: None,
            parameters: None,
            depends_on: vec![],
        };
        let created = service
            .create_workflow(
                CreateWorkflow {
                    workflow_id: Uuid::nil(),
                    job_ids: vec![],
                    name: "render-batch".into(),
                    description: None,
                    steps: vec![step; steps],
                    webhook_url: Some("http://127.0.0.1:9/wf".into()),
                },
                ctx,
            )
            .await
            .unwrap();
        let def = created.state.definition.clone().unwrap();
        (created.state.id, def.job_ids)
    }

    #[tokio::test]
    async fn workflow_completed_body_has_the_seed_and_jobsource_fields() {
        let (store, service, ctx) = setup();
        let (wf, jobs) = workflow(&service, &ctx, 2).await;
        for (i, job) in jobs.iter().enumerate() {
            let step_index = i as u32;
            service
                .workflow(wf, WorkflowCommand::RecordStepStarted { step_index }, &ctx)
                .await
                .unwrap();
            let done = WorkflowCommand::RecordStepCompleted {
                step_index,
                job_id: *job,
                result: json!({"step": i}),
            };
            service.workflow(wf, done, &ctx).await.unwrap();
        }

        let d = planned_one(&*store, "workflow_completed", &format!("workflow-{wf}")).await;
        assert_jobsource_fields(&d);
        let body = &d.payload;
        assert_eq!(body["workflow_id"], json!(wf));
        // The seed's.
        assert_eq!(body["event_type"], "workflow_completed");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["name"], "render-batch");
        assert_eq!(body["total_steps"], 2);
        assert_eq!(body["success_count"], 2);
        assert_eq!(body["failed_count"], 0);
        assert_iso(&body["completed_at"]);
        assert!(body["duration"].is_u64());
        assert!(body["metadata"]["correlation_id"].is_string());
        let steps = body["step_details"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        for (i, step) in steps.iter().enumerate() {
            assert_eq!(step["step_index"], i);
            assert_eq!(step["job_id"], json!(jobs[i]));
            assert_eq!(step["status"], "completed");
            assert_eq!(step["result"], json!({"step": i}));
            assert!(step["error"].is_null());
            assert_iso(&step["completed_at"]);
        }
        assert!(body.get("job_id").is_none());
    }

    #[tokio::test]
    async fn workflow_failed_body_has_the_seed_and_jobsource_fields() {
        let (store, service, ctx) = setup();
        let (wf, jobs) = workflow(&service, &ctx, 3).await;
        let ok = WorkflowCommand::RecordStepCompleted {
            step_index: 0,
            job_id: jobs[0],
            result: json!({"step": 0}),
        };
        service
            .workflow(
                wf,
                WorkflowCommand::RecordStepStarted { step_index: 0 },
                &ctx,
            )
            .await
            .unwrap();
        service.workflow(wf, ok, &ctx).await.unwrap();
        service
            .workflow(
                wf,
                WorkflowCommand::RecordStepStarted { step_index: 1 },
                &ctx,
            )
            .await
            .unwrap();
        let failed = WorkflowCommand::RecordStepFailed {
            step_index: 1,
            job_id: jobs[1],
            error: json!({"code": "E", "message": "boom"}),
        };
        service.workflow(wf, failed, &ctx).await.unwrap();

        let d = planned_one(&*store, "workflow_failed", &format!("workflow-{wf}")).await;
        assert_jobsource_fields(&d);
        let body = &d.payload;
        assert_eq!(body["workflow_id"], json!(wf));
        assert_eq!(body["failed_step"], 1);
        assert_eq!(body["error"], json!({"code": "E", "message": "boom"}));
        // The seed's.
        assert_eq!(body["event_type"], "workflow_failed");
        assert_eq!(body["status"], "failed");
        assert_eq!(body["name"], "render-batch");
        assert_eq!(body["total_steps"], 3);
        assert_eq!(body["success_count"], 1);
        assert_eq!(body["failed_count"], 1);
        assert_iso(&body["failed_at"]);
        assert_eq!(body["completed_at"], body["failed_at"]);
        assert!(body["duration"].is_u64());
        assert!(body["metadata"]["correlation_id"].is_string());
        let steps = body["step_details"].as_array().unwrap();
        let status: Vec<&str> = steps
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        assert_eq!(status, ["completed", "failed", "pending"]);
        for (i, step) in steps.iter().enumerate() {
            assert_eq!(step["step_index"], i);
            assert_eq!(step["job_id"], json!(jobs[i]));
        }
        assert_eq!(steps[0]["result"], json!({"step": 0}));
        assert_iso(&steps[0]["completed_at"]);
        assert_eq!(steps[1]["error"]["code"], "E");
        assert!(steps[1]["result"].is_null());
        assert_iso(&steps[1]["completed_at"]);
        assert!(steps[2]["completed_at"].is_null() && steps[2]["result"].is_null());
    }
}

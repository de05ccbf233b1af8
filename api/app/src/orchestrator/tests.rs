//! The orchestrator over the in-memory store, workers driven by hand through the service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobsource_domain::job::{
    AssignJob, CancelJob, CompleteJob, FailJob, JobCommand, JobError, JobStatus, SubmitJob,
};
use jobsource_domain::workflow::{CreateWorkflow, StepSpec, WorkflowCommand, WorkflowStatus};
use jobsource_domain::{job_stream, workflow_stream};
use jobsource_eventstore::{
    AppendRequest, ExpectedVersion, LogId, MemoryStore, NewEvent, StoreConfig,
};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::service::CommandContext;

struct Fixture {
    service: Arc<Service>,
    state: Arc<MemoryOrchestratorState>,
    orchestrator: Orchestrator,
}

fn fixture() -> Fixture {
    let store = MemoryStore::new(StoreConfig {
        partitions: 4,
        ..StoreConfig::default()
    });
    let service = Arc::new(Service::new(Arc::new(store), None));
    let state = Arc::new(MemoryOrchestratorState::new());
    let orchestrator = Orchestrator::new(service.clone(), state.clone());
    Fixture {
        service,
        state,
        orchestrator,
    }
}

/// Catches up until a pass handles nothing (the orchestrator's own events included).
async fn settle(o: &Orchestrator) -> usize {
    let mut total = 0;
    for _ in 0..100 {
        let n = o.catch_up().await.expect("catch up");
        if n == 0 {
            return total;
        }
        total += n;
    }
    panic!("the orchestrator never settled");
}

fn ctx() -> CommandContext {
    CommandContext::new()
}

async fn create(service: &Service, deps: &[&[u32]]) -> (Uuid, Vec<Uuid>) {
    let steps = deps
        .iter()
        .map(|d| StepSpec {
            job_type: "render".into(),
            prompt: None,
            parameters: None,
            depends_on: d.to_vec(),
        })
        .collect();
    let outcome = service
        .create_workflow(
            CreateWorkflow {
                workflow_id: Uuid::nil(),
                job_ids: Vec::new(),
                name: "wf".into(),
                description: None,
                steps,
                webhook_url: None,
            },
            &ctx(),
        )
        .await
        .expect("create workflow");
    let def = outcome.state.definition.expect("definition");
    (def.workflow_id, def.job_ids)
}

async fn submit(service: &Service, depends_on: Vec<Uuid>) -> Uuid {
    service
        .submit_job(
            SubmitJob {
                job_type: "render".into(),
                depends_on,
                ..SubmitJob::default()
            },
            &ctx(),
        )
        .await
        .expect("submit")
        .state
        .id
}

async fn assign(service: &Service, id: Uuid) {
    let command = JobCommand::Assign(AssignJob {
        lease_expires_at: None,
        worker_id: "w1".into(),
        machine_id: "m1".into(),
    });
    service.job(id, command, &ctx()).await.expect("assign");
}

async fn complete(service: &Service, id: Uuid) {
    let command = JobCommand::Complete(CompleteJob {
        worker_id: None,
        result: json!({ "job": id }),
        duration_ms: Some(5),
    });
    service.job(id, command, &ctx()).await.expect("complete");
}

async fn fail(service: &Service, id: Uuid, retryable: bool) {
    let command = JobCommand::Fail(FailJob {
        retry_at: None,
        worker_id: None,
        error: JobError {
            code: "boom".into(),
            message: "it broke".into(),
        },
        retryable,
    });
    service.job(id, command, &ctx()).await.expect("fail");
}

async fn status(service: &Service, id: Uuid) -> JobStatus {
    service
        .load_job(id)
        .await
        .expect("load job")
        .status
        .expect("job exists")
}

async fn statuses(service: &Service, ids: &[Uuid]) -> Vec<JobStatus> {
    let mut out = Vec::new();
    for id in ids {
        out.push(status(service, *id).await);
    }
    out
}

async fn workflow_status(service: &Service, id: Uuid) -> WorkflowStatus {
    service
        .load_workflow(id)
        .await
        .expect("load workflow")
        .status
        .expect("workflow exists")
}

/// Event types of a stream, in order.
async fn types(service: &Service, stream: &str) -> Vec<String> {
    service
        .history(stream)
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.envelope.event_type)
        .collect()
}

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

/// Version of every stream the workflow touches.
async fn versions(service: &Service, workflow: Uuid, jobs: &[Uuid]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut streams = vec![workflow_stream(workflow)];
    streams.extend(jobs.iter().map(|j| job_stream(*j)));
    for s in streams {
        let v = service.store().stream_version(&s).await.expect("version");
        out.insert(s, v);
    }
    out
}

/// Runs every pending job to completion, settling in between, until the workflow ends;
/// returns the order in which jobs became pending (by index into `jobs`).
async fn drive(f: &Fixture, workflow: Uuid, jobs: &[Uuid]) -> Vec<Vec<usize>> {
    let mut waves = Vec::new();
    for _ in 0..60 {
        settle(&f.orchestrator).await;
        if workflow_status(&f.service, workflow).await.is_terminal() {
            return waves;
        }
        let mut wave = Vec::new();
        for (i, id) in jobs.iter().enumerate() {
            if status(&f.service, *id).await == JobStatus::Pending {
                wave.push(i);
            }
        }
        assert!(!wave.is_empty(), "workflow stuck: {waves:?}");
        for &i in &wave {
            assign(&f.service, jobs[i]).await;
            complete(&f.service, jobs[i]).await;
        }
        waves.push(wave);
    }
    panic!("workflow did not end");
}

/// Every job released at most once (exactly once when it has dependencies), every step
/// recorded once, versions contiguous.
async fn assert_no_duplicates(service: &Service, workflow: Uuid, jobs: &[Uuid], deps: &[&[u32]]) {
    let wf = types(service, &workflow_stream(workflow)).await;
    assert_eq!(count(&wf, "workflow_created"), 1, "{wf:?}");
    assert_eq!(count(&wf, "workflow_step_started"), jobs.len(), "{wf:?}");
    assert_eq!(count(&wf, "workflow_step_completed"), jobs.len(), "{wf:?}");
    assert_eq!(count(&wf, "workflow_completed"), 1, "{wf:?}");
    for (i, id) in jobs.iter().enumerate() {
        let history = service.history(&job_stream(*id)).await.expect("history");
        for (n, e) in history.iter().enumerate() {
            assert_eq!(e.envelope.version, n as u64 + 1, "versions of job {i}");
        }
        let t: Vec<String> = history.into_iter().map(|e| e.envelope.event_type).collect();
        assert_eq!(count(&t, "job_submitted"), 1, "job {i}: {t:?}");
        let released = usize::from(!deps[i].is_empty());
        assert_eq!(count(&t, "job_released"), released, "job {i}: {t:?}");
        assert_eq!(count(&t, "job_completed"), 1, "job {i}: {t:?}");
    }
}

const DIAMOND: &[&[u32]] = &[&[], &[0], &[0], &[1, 2]];

#[tokio::test]
async fn diamond_releases_in_dependency_order_and_completes() {
    let f = fixture();
    let (wf, jobs) = create(&f.service, DIAMOND).await;
    settle(&f.orchestrator).await;
    use JobStatus::*;
    assert_eq!(
        statuses(&f.service, &jobs).await,
        [Pending, Waiting, Waiting, Waiting]
    );

    assign(&f.service, jobs[0]).await;
    settle(&f.orchestrator).await;
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Running
    );
    complete(&f.service, jobs[0]).await;
    settle(&f.orchestrator).await;
    assert_eq!(
        statuses(&f.service, &jobs).await,
        [Completed, Pending, Pending, Waiting]
    );

    assign(&f.service, jobs[1]).await;
    complete(&f.service, jobs[1]).await;
    settle(&f.orchestrator).await;
    // Step 3 still waits for step 2.
    assert_eq!(status(&f.service, jobs[3]).await, Waiting);

    assign(&f.service, jobs[2]).await;
    complete(&f.service, jobs[2]).await;
    settle(&f.orchestrator).await;
    assert_eq!(status(&f.service, jobs[3]).await, Pending);
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Running
    );

    assign(&f.service, jobs[3]).await;
    complete(&f.service, jobs[3]).await;
    settle(&f.orchestrator).await;
    let workflow = f.service.load_workflow(wf).await.expect("workflow");
    assert_eq!(workflow.status, Some(WorkflowStatus::Completed));
    assert_eq!(workflow.completed_steps, 4);
    assert_no_duplicates(&f.service, wf, &jobs, DIAMOND).await;

    // Commands carry the causing event's correlation and the orchestrator as actor.
    let released = f
        .service
        .history(&job_stream(jobs[3]))
        .await
        .expect("history");
    let release = released
        .iter()
        .find(|e| e.envelope.event_type == "job_released")
        .expect("released");
    assert!(release.envelope.causation_id.is_some());
    assert_eq!(release.envelope.metadata["actor"], json!("orchestrator"));
    for (_, _, state, error) in f.orchestrator.status().await {
        assert_eq!(state, "running");
        assert_eq!(error, None);
    }
}

#[tokio::test]
async fn chain_runs_one_step_at_a_time() {
    let f = fixture();
    let deps: &[&[u32]] = &[&[], &[0], &[1], &[2]];
    let (wf, jobs) = create(&f.service, deps).await;
    let waves = drive(&f, wf, &jobs).await;
    assert_eq!(waves, vec![vec![0], vec![1], vec![2], vec![3]]);
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Completed
    );
    assert_no_duplicates(&f.service, wf, &jobs, deps).await;
}

#[tokio::test]
async fn fan_out_then_fan_in() {
    let f = fixture();
    let deps: &[&[u32]] = &[&[], &[0], &[0], &[0], &[0], &[0], &[1, 2, 3, 4, 5]];
    let (wf, jobs) = create(&f.service, deps).await;
    let waves = drive(&f, wf, &jobs).await;
    assert_eq!(waves, vec![vec![0], vec![1, 2, 3, 4, 5], vec![6]]);
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Completed
    );
    assert_no_duplicates(&f.service, wf, &jobs, deps).await;
}

#[tokio::test]
async fn terminal_step_failure_fails_the_workflow_and_cancels_unstarted_jobs() {
    let f = fixture();
    // 0 -> 1 -> 2; 3 runs beside them; 4 stays pending (never assigned).
    let deps: &[&[u32]] = &[&[], &[0], &[1], &[], &[]];
    let (wf, jobs) = create(&f.service, deps).await;
    settle(&f.orchestrator).await;
    assign(&f.service, jobs[0]).await;
    assign(&f.service, jobs[3]).await;
    // A retryable failure only sends the job back to pending.
    fail(&f.service, jobs[0], true).await;
    settle(&f.orchestrator).await;
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Running
    );
    assert_eq!(status(&f.service, jobs[0]).await, JobStatus::Pending);

    assign(&f.service, jobs[0]).await;
    fail(&f.service, jobs[0], false).await;
    settle(&f.orchestrator).await;
    use JobStatus::*;
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Failed
    );
    assert_eq!(
        statuses(&f.service, &jobs).await,
        [Failed, Cancelled, Cancelled, Assigned, Cancelled]
    );
    let wf_types = types(&f.service, &workflow_stream(wf)).await;
    assert_eq!(count(&wf_types, "workflow_step_failed"), 1);
    assert_eq!(count(&wf_types, "workflow_failed"), 1);

    // The step that was running may still finish; the workflow refuses it, quietly.
    complete(&f.service, jobs[3]).await;
    settle(&f.orchestrator).await;
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Failed
    );
    for (_, _, state, error) in f.orchestrator.status().await {
        assert_eq!(state, "running");
        assert_eq!(error, None);
    }
    let cancelled = f
        .service
        .history(&job_stream(jobs[1]))
        .await
        .expect("history");
    assert_eq!(
        cancelled
            .last()
            .map(|e| e.envelope.data.to_value()["reason"].clone()),
        Some(json!("workflow failed"))
    );
}

#[tokio::test]
async fn cancelling_a_workflow_cancels_waiting_and_pending_jobs_only() {
    let f = fixture();
    // 0 pending, 1 waiting on 0, 2 assigned.
    let deps: &[&[u32]] = &[&[], &[0], &[]];
    let (wf, jobs) = create(&f.service, deps).await;
    settle(&f.orchestrator).await;
    assign(&f.service, jobs[2]).await;
    f.service
        .workflow(
            wf,
            WorkflowCommand::Cancel {
                reason: Some("enough".into()),
            },
            &ctx(),
        )
        .await
        .expect("cancel workflow");
    settle(&f.orchestrator).await;
    use JobStatus::*;
    assert_eq!(
        statuses(&f.service, &jobs).await,
        [Cancelled, Cancelled, Assigned]
    );
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Cancelled
    );
    complete(&f.service, jobs[2]).await;
    settle(&f.orchestrator).await;
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Cancelled
    );
}

#[tokio::test]
async fn standalone_dependents_are_released_when_their_dependencies_complete() {
    let f = fixture();
    let a = submit(&f.service, vec![]).await;
    let b = submit(&f.service, vec![a]).await;
    let ghost = Uuid::now_v7();
    let c = submit(&f.service, vec![a, ghost]).await;
    settle(&f.orchestrator).await;
    assert_eq!(status(&f.service, b).await, JobStatus::Waiting);

    assign(&f.service, a).await;
    complete(&f.service, a).await;
    settle(&f.orchestrator).await;
    assert_eq!(status(&f.service, b).await, JobStatus::Pending);
    // A dependency that does not exist keeps the job waiting.
    assert_eq!(status(&f.service, c).await, JobStatus::Waiting);

    // Submitted after its dependency completed: released on submission.
    let d = submit(&f.service, vec![a]).await;
    settle(&f.orchestrator).await;
    assert_eq!(status(&f.service, d).await, JobStatus::Pending);

    // A dependency failing terminally leaves its dependents waiting.
    let e = submit(&f.service, vec![]).await;
    let g = submit(&f.service, vec![e]).await;
    settle(&f.orchestrator).await;
    assign(&f.service, e).await;
    fail(&f.service, e, false).await;
    settle(&f.orchestrator).await;
    assert_eq!(status(&f.service, g).await, JobStatus::Waiting);
    // ... as does a cancelled one.
    let h = submit(&f.service, vec![]).await;
    let i = submit(&f.service, vec![h]).await;
    f.service
        .job(h, JobCommand::Cancel(CancelJob { reason: None }), &ctx())
        .await
        .expect("cancel");
    settle(&f.orchestrator).await;
    assert_eq!(status(&f.service, i).await, JobStatus::Waiting);

    let released = types(&f.service, &job_stream(b)).await;
    assert_eq!(count(&released, "job_released"), 1);
}

#[tokio::test]
async fn redelivery_from_the_start_appends_nothing() {
    let f = fixture();
    let (wf, jobs) = create(&f.service, DIAMOND).await;
    settle(&f.orchestrator).await;
    assign(&f.service, jobs[0]).await;
    complete(&f.service, jobs[0]).await;
    settle(&f.orchestrator).await;
    let mid = versions(&f.service, wf, &jobs).await;

    // Crash before any checkpoint write survived, same dependents index.
    for p in 0..f.service.store().partitions() {
        f.state.advance(p, LogId::ZERO).await.expect("reset");
    }
    assert!(settle(&f.orchestrator).await > 0);
    assert_eq!(versions(&f.service, wf, &jobs).await, mid);

    // Crash that lost all orchestrator state: a new orchestrator replays everything.
    let fresh = Orchestrator::new(f.service.clone(), Arc::new(MemoryOrchestratorState::new()));
    settle(&fresh).await;
    assert_eq!(versions(&f.service, wf, &jobs).await, mid);

    // The new one drives the workflow to the end, without duplicates.
    let f2 = Fixture {
        service: f.service.clone(),
        state: Arc::new(MemoryOrchestratorState::new()),
        orchestrator: fresh,
    };
    drive(&f2, wf, &jobs).await;
    assert_eq!(
        workflow_status(&f.service, wf).await,
        WorkflowStatus::Completed
    );
    assert_no_duplicates(&f.service, wf, &jobs, DIAMOND).await;
    let done = versions(&f.service, wf, &jobs).await;

    // And replaying the finished workflow changes nothing either.
    let again = Orchestrator::new(f.service.clone(), Arc::new(MemoryOrchestratorState::new()));
    settle(&again).await;
    assert_eq!(versions(&f.service, wf, &jobs).await, done);
}

#[tokio::test]
async fn workflow_created_alone_submits_the_step_jobs() {
    // The crash-recovery path: the workflow was appended but its jobs never submitted.
    let f = fixture();
    let workflow_id = Uuid::now_v7();
    let job_ids = vec![Uuid::now_v7(), Uuid::now_v7()];
    let create = CreateWorkflow {
        workflow_id,
        job_ids: job_ids.clone(),
        name: "recovered".into(),
        description: None,
        steps: vec![
            StepSpec {
                job_type: "render".into(),
                prompt: None,
                parameters: None,
                depends_on: vec![],
            },
            StepSpec {
                job_type: "render".into(),
                prompt: None,
                parameters: None,
                depends_on: vec![0],
            },
        ],
        webhook_url: None,
    };
    // `workflow()` appends the creation without submitting the steps: what a crashed
    // API process leaves behind.
    f.service
        .workflow(workflow_id, WorkflowCommand::Create(create), &ctx())
        .await
        .expect("create");
    assert_eq!(
        f.service
            .store()
            .stream_version(&job_stream(job_ids[0]))
            .await
            .expect("v"),
        0
    );
    settle(&f.orchestrator).await;
    assert_eq!(
        statuses(&f.service, &job_ids).await,
        [JobStatus::Pending, JobStatus::Waiting]
    );
    drive(&f, workflow_id, &job_ids).await;
    assert_eq!(
        workflow_status(&f.service, workflow_id).await,
        WorkflowStatus::Completed
    );
}

#[tokio::test]
async fn an_event_that_keeps_failing_stalls_its_partition_only() {
    let f = fixture();
    let orchestrator =
        Orchestrator::new(f.service.clone(), f.state.clone()).with_config(OrchestratorConfig {
            max_attempts: 3,
            backoff: Duration::from_millis(1),
            ..OrchestratorConfig::default()
        });
    // A job_completed whose payload is not one.
    let stream = job_stream(Uuid::now_v7());
    let bad = f
        .service
        .store()
        .append(AppendRequest::new(
            stream.as_str(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "job_completed",
                1,
                json!({ "nonsense": true }),
            )],
        ))
        .await
        .expect("append");
    let bad_position = bad.last_position().expect("position");
    // Work on the other partitions goes on.
    let a = loop {
        let id = submit(&f.service, vec![]).await;
        if f.service.store().partition_of(&job_stream(id)) != bad_position.partition {
            break id;
        }
    };
    let b = loop {
        let id = submit(&f.service, vec![a]).await;
        if f.service.store().partition_of(&job_stream(id)) != bad_position.partition {
            break id;
        }
    };
    settle(&orchestrator).await;
    let status = orchestrator.status().await;
    let (_, checkpoint, state, error) = &status[bad_position.partition as usize];
    assert_eq!(state, "stalled");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains(&bad_position.to_string())),
        "{error:?}"
    );
    // The checkpoint stays before the bad event.
    let cp: jobsource_eventstore::Position = checkpoint.parse().expect("position");
    assert!(cp.id < bad_position.id);
    for (p, _, state, _) in &status {
        if *p != bad_position.partition {
            assert_eq!(state, "running");
        }
    }
    assign(&f.service, a).await;
    complete(&f.service, a).await;
    settle(&orchestrator).await;
    assert_eq!(
        super::tests::status(&f.service, b).await,
        JobStatus::Pending
    );
    // Still stalled on later passes, not skipped.
    assert_eq!(
        orchestrator.status().await[bad_position.partition as usize].2,
        "stalled"
    );
}

#[tokio::test]
async fn run_follows_the_log_and_stops_on_shutdown() {
    let f = fixture();
    let orchestrator = Arc::new(f.orchestrator);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(orchestrator.clone().run(rx));
    let (wf, jobs) = create(&f.service, DIAMOND).await;
    for _ in 0..4 {
        let pending = wait_for_pending(&f.service, &jobs).await;
        for id in pending {
            assign(&f.service, id).await;
            complete(&f.service, id).await;
        }
        if jobs.len() == count_completed(&f.service, &jobs).await {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while workflow_status(&f.service, wf).await != WorkflowStatus::Completed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflow not completed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(true).expect("send");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run stops")
        .expect("no panic");
    assert_no_duplicates(&f.service, wf, &jobs, DIAMOND).await;
}

async fn count_completed(service: &Service, jobs: &[Uuid]) -> usize {
    statuses(service, jobs)
        .await
        .into_iter()
        .filter(|s| *s == JobStatus::Completed)
        .count()
}

async fn wait_for_pending(service: &Service, jobs: &[Uuid]) -> Vec<Uuid> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut pending = Vec::new();
        for id in jobs {
            if status(service, *id).await == JobStatus::Pending {
                pending.push(*id);
            }
        }
        if !pending.is_empty() {
            return pending;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job became pending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

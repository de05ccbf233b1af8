//! The orchestrator on real Redis: checkpoints and the dependents index in Redis, a
//! workflow driven to completion, and an orchestrator killed mid-workflow and restarted
//! without any command applied twice.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobsource_app::orchestrator::{Orchestrator, OrchestratorState, RedisOrchestratorState};
use jobsource_app::service::{CommandContext, Service};
use jobsource_domain::job::{AssignJob, CompleteJob, JobCommand, JobStatus};
use jobsource_domain::workflow::{CreateWorkflow, StepSpec, WorkflowStatus};
use jobsource_domain::{job_stream, workflow_stream};
use jobsource_eventstore::{EventStore, LogId, RedisStore, StoreConfig};
use jobsource_tests::{cleanup_prefix, redis_url, unique_prefix};
use redis::AsyncCommands;
use serde_json::json;
use uuid::Uuid;

const DIAMOND: &[&[u32]] = &[&[], &[0], &[0], &[1, 2]];

struct Env {
    url: String,
    prefix: String,
    store: RedisStore,
    service: Arc<Service>,
    state: Arc<RedisOrchestratorState>,
}

async fn env(name: &str) -> Env {
    let url = redis_url();
    let prefix = unique_prefix(name);
    let store = RedisStore::connect(
        &url,
        StoreConfig {
            prefix: prefix.clone(),
            partitions: 4,
            ..StoreConfig::default()
        },
    )
    .await
    .expect("connect");
    let service = Arc::new(Service::new(Arc::new(store.clone()), None));
    let state = Arc::new(RedisOrchestratorState::new(store.connection(), &prefix));
    Env {
        url,
        prefix,
        store,
        service,
        state,
    }
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
                name: "diamond".into(),
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

async fn status(service: &Service, id: Uuid) -> JobStatus {
    service
        .load_job(id)
        .await
        .expect("load")
        .status
        .expect("exists")
}

async fn workflow_status(service: &Service, id: Uuid) -> WorkflowStatus {
    service
        .load_workflow(id)
        .await
        .expect("load")
        .status
        .expect("exists")
}

async fn run_job(service: &Service, id: Uuid) {
    let assign = JobCommand::Assign(AssignJob {
        lease_expires_at: None,
        worker_id: "w".into(),
        machine_id: "m".into(),
    });
    service.job(id, assign, &ctx()).await.expect("assign");
    let complete = JobCommand::Complete(CompleteJob {
        worker_id: None,
        result: json!({ "ok": id }),
        duration_ms: None,
    });
    service.job(id, complete, &ctx()).await.expect("complete");
}

/// Catches up until a pass handles nothing.
async fn settle(o: &Orchestrator) {
    for _ in 0..100 {
        if o.catch_up().await.expect("catch up") == 0 {
            return;
        }
    }
    panic!("the orchestrator never settled");
}

/// Waits (for a running orchestrator) until some of `jobs` are pending; returns them.
async fn wait_pending(service: &Service, jobs: &[Uuid]) -> Vec<Uuid> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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

async fn wait_workflow(service: &Service, id: Uuid, want: WorkflowStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while workflow_status(service, id).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflow never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn versions(service: &Service, workflows: &[(Uuid, Vec<Uuid>)]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (wf, jobs) in workflows {
        let mut streams = vec![workflow_stream(*wf)];
        streams.extend(jobs.iter().map(|j| job_stream(*j)));
        for s in streams {
            let v = service.store().stream_version(&s).await.expect("version");
            out.insert(s, v);
        }
    }
    out
}

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

/// Exactly one of everything the orchestrator causes, versions contiguous.
async fn assert_no_duplicates(service: &Service, wf: Uuid, jobs: &[Uuid], deps: &[&[u32]]) {
    let history = service
        .history(&workflow_stream(wf))
        .await
        .expect("history");
    for (n, e) in history.iter().enumerate() {
        assert_eq!(e.envelope.version, n as u64 + 1, "workflow versions");
    }
    let t: Vec<String> = history.into_iter().map(|e| e.envelope.event_type).collect();
    assert_eq!(count(&t, "workflow_created"), 1, "{t:?}");
    assert_eq!(count(&t, "workflow_step_started"), jobs.len(), "{t:?}");
    assert_eq!(count(&t, "workflow_step_completed"), jobs.len(), "{t:?}");
    assert_eq!(count(&t, "workflow_completed"), 1, "{t:?}");
    assert_eq!(t.len(), 2 + 2 * jobs.len(), "{t:?}");
    for (i, id) in jobs.iter().enumerate() {
        let history = service.history(&job_stream(*id)).await.expect("history");
        for (n, e) in history.iter().enumerate() {
            assert_eq!(e.envelope.version, n as u64 + 1, "versions of job {i}");
        }
        let t: Vec<String> = history.into_iter().map(|e| e.envelope.event_type).collect();
        let released = usize::from(!deps[i].is_empty());
        assert_eq!(count(&t, "job_submitted"), 1, "job {i}: {t:?}");
        assert_eq!(count(&t, "job_released"), released, "job {i}: {t:?}");
        assert_eq!(count(&t, "job_assigned"), 1, "job {i}: {t:?}");
        assert_eq!(count(&t, "job_completed"), 1, "job {i}: {t:?}");
        assert_eq!(t.len(), 3 + released, "job {i}: {t:?}");
    }
}

#[tokio::test]
async fn diamond_workflow_completes_with_state_in_redis() {
    let env = env("orchestrator_diamond").await;
    let orchestrator = Orchestrator::new(env.service.clone(), env.state.clone());
    let (wf, jobs) = create(&env.service, DIAMOND).await;
    settle(&orchestrator).await;
    use JobStatus::*;
    let mut seen = Vec::new();
    for id in &jobs {
        seen.push(status(&env.service, *id).await);
    }
    assert_eq!(seen, [Pending, Waiting, Waiting, Waiting]);

    run_job(&env.service, jobs[0]).await;
    settle(&orchestrator).await;
    assert_eq!(status(&env.service, jobs[1]).await, Pending);
    assert_eq!(status(&env.service, jobs[2]).await, Pending);
    assert_eq!(status(&env.service, jobs[3]).await, Waiting);
    run_job(&env.service, jobs[1]).await;
    settle(&orchestrator).await;
    assert_eq!(status(&env.service, jobs[3]).await, Waiting);
    run_job(&env.service, jobs[2]).await;
    settle(&orchestrator).await;
    assert_eq!(status(&env.service, jobs[3]).await, Pending);
    run_job(&env.service, jobs[3]).await;
    settle(&orchestrator).await;
    assert_eq!(
        workflow_status(&env.service, wf).await,
        WorkflowStatus::Completed
    );
    assert_no_duplicates(&env.service, wf, &jobs, DIAMOND).await;

    // The state lives under the prefix, in the documented keys.
    let mut deps = env.state.dependents(jobs[0]).await.expect("dependents");
    deps.sort();
    let mut want = vec![jobs[1], jobs[2]];
    want.sort();
    assert_eq!(deps, want);
    let mut conn = env.store.connection();
    let checkpoints: BTreeMap<u32, String> = conn
        .hgetall(format!("{}:orchestrator:checkpoint", env.prefix))
        .await
        .expect("hgetall");
    assert!(!checkpoints.is_empty());
    let head = env.store.head().await.expect("head");
    for (p, id) in &checkpoints {
        assert_eq!(id.parse::<LogId>().expect("log id"), head.after(*p));
    }
    for (_, _, state, error) in orchestrator.status().await {
        assert_eq!(state, "running");
        assert_eq!(error, None);
    }

    cleanup_prefix(&env.url, &env.prefix)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn orchestrator_killed_mid_workflow_and_restarted_applies_nothing_twice() {
    let env = env("orchestrator_killed").await;
    let first = Arc::new(Orchestrator::new(env.service.clone(), env.state.clone()));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(first.clone().run(rx));

    let mut workflows = Vec::new();
    for _ in 0..3 {
        workflows.push(create(&env.service, DIAMOND).await);
    }
    // Every first step, then the second steps as the orchestrator releases them.
    for (_, jobs) in &workflows {
        for id in wait_pending(&env.service, &jobs[..1]).await {
            run_job(&env.service, id).await;
        }
    }
    for (_, jobs) in &workflows {
        for id in wait_pending(&env.service, &jobs[1..2]).await {
            run_job(&env.service, id).await;
        }
    }
    // Killed while it is (most likely) reacting to those completions.
    tokio::time::sleep(Duration::from_millis(3)).await;
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    drop(tx);

    // A new process over the same Redis state finishes every workflow.
    let second = Arc::new(Orchestrator::new(env.service.clone(), env.state.clone()));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(second.clone().run(rx));
    for (_, jobs) in &workflows {
        for id in wait_pending(&env.service, &jobs[2..3]).await {
            run_job(&env.service, id).await;
        }
    }
    for (_, jobs) in &workflows {
        for id in wait_pending(&env.service, &jobs[3..]).await {
            run_job(&env.service, id).await;
        }
    }
    for (wf, _) in &workflows {
        wait_workflow(&env.service, *wf, WorkflowStatus::Completed).await;
    }
    tx.send(true).expect("shutdown");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run stops on shutdown")
        .expect("no panic");
    for (wf, jobs) in &workflows {
        assert_no_duplicates(&env.service, *wf, jobs, DIAMOND).await;
    }

    // The worst crash: no checkpoint write survived. Everything is handed over again and
    // nothing is appended.
    let done = versions(&env.service, &workflows).await;
    for p in 0..env.store.partitions() {
        env.state.advance(p, LogId::ZERO).await.expect("rewind");
    }
    let third = Orchestrator::new(env.service.clone(), env.state.clone());
    settle(&third).await;
    assert_eq!(versions(&env.service, &workflows).await, done);
    for (_, _, state, error) in third.status().await {
        assert_eq!(state, "running");
        assert_eq!(error, None);
    }

    cleanup_prefix(&env.url, &env.prefix)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn a_fenced_checkpoint_write_from_a_former_lease_holder_changes_nothing() {
    let env = env("orchestrator_fence").await;
    let ten = LogId::new(10, 0);
    assert!(env
        .state
        .advance_fenced(2, ten, Some(5))
        .await
        .expect("write"));
    // A paused former owner (epoch 4) wakes up and writes an older checkpoint.
    assert!(!env
        .state
        .advance_fenced(2, LogId::new(3, 0), Some(4))
        .await
        .expect("write"));
    assert_eq!(env.state.checkpoint(2).await.expect("read"), ten);
    // The holder goes on; other partitions are unaffected.
    assert!(env
        .state
        .advance_fenced(2, LogId::new(11, 0), Some(5))
        .await
        .expect("write"));
    assert!(env
        .state
        .advance_fenced(1, LogId::new(1, 0), Some(1))
        .await
        .expect("write"));
    cleanup_prefix(&env.url, &env.prefix)
        .await
        .expect("cleanup");
}

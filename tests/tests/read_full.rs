//! `FullReadSide` (the `redis` projection for lookups and claims, the `postgres`
//! projection for lists and stats) answers exactly like the embedded `MemoryReadModel`
//! fed from the same Redis store: jobs in every status, lists with each filter and across
//! pages, stats, workflows with steps, the claim order of the pending queue and its
//! paging, read-your-writes checkpoints, and the status, rebuild and health endpoints.
//!
//! Each test has its own key prefix and its own PostgreSQL database, removed at the end
//! (also when it fails: see `Env`'s `Drop`).

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobsource_app::read::full::FullReadSide;
use jobsource_app::read::memory::MemoryReadModel;
use jobsource_app::read::{JobQuery, Model, PendingEntry, QueryError, ReadSide, WorkflowQuery};
use jobsource_app::service::{CommandContext, Service};
use jobsource_domain::job::{
    AssignJob, CancelJob, CompleteJob, FailJob, Job, JobCommand, JobError, ReportProgress,
    Requirements, SubmitJob,
};
use jobsource_domain::workflow::{CreateWorkflow, StepSpec, Workflow, WorkflowCommand};
use jobsource_eventstore::{EventStore, LogId, Offset, Position, RedisStore, StoreConfig};
use jobsource_projections::{migrate, PostgresReadModel, RedisReadModel};
use jobsource_tests::{cleanup_prefix, redis_url, unique_prefix, TestDatabase};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// One store, both read sides over it, and what to clean up.
struct Env {
    prefix: String,
    /// Taken by [`Env::finish`]; when a test panics before it, dropping the database is
    /// left to `TestDatabase`'s own best-effort drop.
    db: Option<TestDatabase>,
    pool: PgPool,
    store: Arc<dyn EventStore>,
    service: Service,
    redis_model: Arc<RedisReadModel>,
    memory: Arc<MemoryReadModel>,
    full: FullReadSide,
    /// Position of the last command that wrote something.
    last: Option<Position>,
}

impl Env {
    async fn new(name: &str) -> Env {
        let prefix = unique_prefix(name);
        let store: Arc<dyn EventStore> = Arc::new(
            RedisStore::connect(
                &redis_url(),
                StoreConfig {
                    prefix: prefix.clone(),
                    partitions: 4,
                    ..StoreConfig::default()
                },
            )
            .await
            .expect("connect to REDIS_URL"),
        );
        let db = TestDatabase::create().await;
        let pool = db.pool(5).await.expect("connect to the test database");
        migrate::migrate(&pool).await.expect("migrations");
        let client = redis::Client::open(redis_url()).expect("redis url");
        let manager = client
            .get_connection_manager()
            .await
            .expect("redis connection");
        // Under the store's prefix, so one cleanup removes both.
        let redis_model = Arc::new(RedisReadModel::new(manager.into(), &format!("{prefix}:rm")));
        let memory = MemoryReadModel::new(store.clone());
        let full = FullReadSide::new(store.clone(), redis_model.clone(), pool.clone());
        Env {
            prefix,
            db: Some(db),
            pool,
            service: Service::new(store.clone(), None),
            store,
            redis_model,
            memory,
            full,
            last: None,
        }
    }

    /// Brings the `redis` and `postgres` projections and the memory model to the head.
    async fn catch_up(&self) {
        self.redis_model
            .catch_up(&*self.store, 7)
            .await
            .expect("redis catch-up");
        jobsource_projections::catch_up(&*self.store, &self.pool, &PostgresReadModel, 7)
            .await
            .expect("postgres catch-up");
        self.memory.catch_up().await.expect("memory catch-up");
    }

    async fn finish(mut self) {
        self.pool.close().await;
        if let Some(db) = self.db.take() {
            db.drop_db().await;
        }
        cleanup_prefix(&redis_url(), &self.prefix)
            .await
            .expect("cleanup");
        self.prefix.clear();
    }

    async fn submit(&mut self, submit: SubmitJob) -> Uuid {
        let out = self
            .service
            .submit_job(submit, &CommandContext::new())
            .await
            .expect("submit");
        self.last = out.position.or(self.last);
        out.state.id
    }

    async fn job(&mut self, id: Uuid, command: JobCommand) -> Job {
        let out = self
            .service
            .job(id, command, &CommandContext::new())
            .await
            .expect("job command");
        self.last = out.position.or(self.last);
        out.state
    }

    async fn workflow(&mut self, id: Uuid, command: WorkflowCommand) -> Workflow {
        let out = self
            .service
            .workflow(id, command, &CommandContext::new())
            .await
            .expect("workflow command");
        self.last = out.position.or(self.last);
        out.state
    }

    async fn create_workflow(&mut self, create: CreateWorkflow) -> (Uuid, Vec<Uuid>) {
        let out = self
            .service
            .create_workflow(create, &CommandContext::new())
            .await
            .expect("create workflow");
        self.last = out.position.or(self.last);
        let def = out.state.definition.expect("created");
        (def.workflow_id, def.job_ids)
    }

    async fn assert_same_job(&self, id: Uuid, status: &str) {
        let full = self.full.job(id).await.expect("full job");
        let memory = self.memory.job(id).await.expect("memory job");
        assert_eq!(full, memory, "job {id} ({status})");
        assert_eq!(
            full.map(|j| j.status).as_deref(),
            Some(status),
            "job {id} is in the status the scenario expects"
        );
    }

    /// Compares one page of jobs, then the following pages; returns the items seen.
    async fn assert_same_jobs(&self, query: JobQuery) -> usize {
        let mut q = query;
        let mut seen = 0;
        loop {
            let full = self.full.jobs(&q).await.expect("full jobs");
            let memory = self.memory.jobs(&q).await.expect("memory jobs");
            assert_eq!(full.items, memory.items, "jobs page of {q:?}");
            assert_eq!(full.next_cursor, memory.next_cursor, "cursor of {q:?}");
            seen += full.items.len();
            match full.next_cursor {
                Some(c) => q.after = Some(c.parse().expect("cursor is a job id")),
                None => return seen,
            }
        }
    }

    async fn assert_same_workflows(&self, query: WorkflowQuery) -> usize {
        let mut q = query;
        let mut seen = 0;
        loop {
            let full = self.full.workflows(&q).await.expect("full workflows");
            let memory = self.memory.workflows(&q).await.expect("memory workflows");
            assert_eq!(full.items, memory.items, "workflows page of {q:?}");
            assert_eq!(full.next_cursor, memory.next_cursor, "cursor of {q:?}");
            seen += full.items.len();
            match full.next_cursor {
                Some(c) => q.after = Some(c.parse().expect("cursor is a workflow id")),
                None => return seen,
            }
        }
    }

    async fn assert_same_pending(
        &self,
        after: Option<PendingEntry>,
        limit: usize,
    ) -> Vec<PendingEntry> {
        let full = self.full.pending(after, limit).await.expect("full pending");
        let memory = self
            .memory
            .pending(after, limit)
            .await
            .expect("memory pending");
        assert_eq!(full, memory, "pending after {after:?}, limit {limit}");
        full
    }
}

impl Drop for Env {
    /// A test that panicked before [`Env::finish`] still removes its keys (best effort,
    /// from a thread with its own runtime, like `TestDatabase`'s drop).
    fn drop(&mut self) {
        if self.prefix.is_empty() {
            return;
        }
        let prefix = std::mem::take(&mut self.prefix);
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(cleanup_prefix(&redis_url(), &prefix)).err()
        });
        if let Ok(Some(e)) = cleanup.join() {
            eprintln!("read_full: best-effort cleanup of the test's keys failed: {e}");
        }
    }
}

fn submit(job_type: &str, priority: u8) -> SubmitJob {
    SubmitJob {
        job_type: job_type.into(),
        priority,
        ..SubmitJob::default()
    }
}

fn assign() -> JobCommand {
    JobCommand::Assign(AssignJob {
        lease_expires_at: None,
        worker_id: "worker-1".into(),
        machine_id: "machine-1".into(),
    })
}

fn progress(p: u8, stage: Option<&str>) -> JobCommand {
    JobCommand::ReportProgress(ReportProgress {
        worker_id: None,
        progress: p,
        stage: stage.map(str::to_owned),
        message: None,
    })
}

fn fail(retryable: bool) -> JobCommand {
    JobCommand::Fail(FailJob {
        retry_at: None,
        worker_id: None,
        error: JobError {
            code: "OOM".into(),
            message: "out of memory".into(),
        },
        retryable,
    })
}

fn step(job_type: &str, depends_on: Vec<u32>) -> StepSpec {
    StepSpec {
        job_type: job_type.into(),
        prompt: Some(format!("a {job_type} step")),
        parameters: Some(
            json!({"steps": 20})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ),
        depends_on,
    }
}

fn workflow(name: &str, steps: Vec<StepSpec>) -> CreateWorkflow {
    CreateWorkflow {
        workflow_id: Uuid::nil(),
        job_ids: Vec::new(),
        name: name.into(),
        description: Some(format!("{name} description")),
        steps,
        webhook_url: Some("https://example.com/hook".into()),
    }
}

fn created_at(view: Option<jobsource_app::read::JobView>) -> DateTime<Utc> {
    let at = view.and_then(|v| v.created_at).expect("created_at");
    DateTime::parse_from_rfc3339(&at)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn jobs_lists_and_stats_match_the_embedded_model() {
    let mut env = Env::new("read_full_jobs").await;

    let pending = env
        .submit(SubmitJob {
            prompt: Some("a cat".into()),
            parameters: json!({"width": 512, "scale": 1.5, "tags": ["x"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            webhook_url: Some("https://example.com/hook".into()),
            ..submit("text-to-image", 50)
        })
        .await;
    let assigned = env.submit(submit("upscale", 50)).await;
    env.job(assigned, assign()).await;
    let completed = env
        .submit(SubmitJob {
            requirements: Some(Requirements {
                capabilities: vec!["upscale".into(), "cuda".into()],
                gpu_memory: Some(24.0),
            }),
            ..submit("upscale", 70)
        })
        .await;
    env.job(completed, assign()).await;
    env.job(completed, progress(40, Some("render"))).await;
    env.job(
        completed,
        JobCommand::Complete(CompleteJob {
            worker_id: None,
            result: json!({"url": "s3://bucket/out.png", "size": [512, 512]}),
            duration_ms: Some(1200),
        }),
    )
    .await;
    let retried = env.submit(submit("upscale", 50)).await;
    env.job(retried, assign()).await;
    env.job(retried, progress(30, None)).await;
    env.job(retried, fail(true)).await;
    let failed = env
        .submit(SubmitJob {
            max_retries: 0,
            ..submit("controlnet", 30)
        })
        .await;
    env.job(failed, assign()).await;
    env.job(failed, fail(true)).await;
    let cancelled = env.submit(submit("controlnet", 50)).await;
    env.job(
        cancelled,
        JobCommand::Cancel(CancelJob {
            reason: Some("not needed".into()),
        }),
    )
    .await;
    // Dependencies in creation order (the Redis set does not keep any other order).
    let waiting = env
        .submit(SubmitJob {
            depends_on: vec![pending, assigned],
            ..submit("upscale", 60)
        })
        .await;
    let running = env.submit(submit("upscale", 80)).await;
    env.job(running, assign()).await;
    env.job(running, progress(10, Some("load"))).await;
    let released = env
        .submit(SubmitJob {
            depends_on: vec![completed],
            ..submit("upscale", 60)
        })
        .await;
    env.job(released, JobCommand::Release).await;
    let (wf, _) = env
        .create_workflow(workflow("pipeline", vec![step("upscale", vec![])]))
        .await;
    env.catch_up().await;

    for (id, status) in [
        (pending, "pending"),
        (assigned, "assigned"),
        (completed, "completed"),
        (retried, "pending"),
        (failed, "failed"),
        (cancelled, "cancelled"),
        (waiting, "waiting"),
        (running, "running"),
        (released, "pending"),
    ] {
        env.assert_same_job(id, status).await;
    }
    let retried_view = env.full.job(retried).await.unwrap().unwrap();
    assert_eq!((retried_view.retry_count, retried_view.attempt), (1, 1));
    assert!(retried_view.error.is_some());
    assert_eq!(
        env.full.job(waiting).await.unwrap().unwrap().depends_on,
        vec![pending, assigned]
    );
    assert_eq!(env.full.job(Uuid::now_v7()).await.unwrap(), None);

    let all = JobQuery {
        limit: 100,
        ..JobQuery::default()
    };
    assert_eq!(env.assert_same_jobs(all.clone()).await, 10);
    for (query, expected) in [
        (
            JobQuery {
                status: Some("pending".into()),
                ..all.clone()
            },
            4,
        ),
        (
            JobQuery {
                status: Some("completed".into()),
                ..all.clone()
            },
            1,
        ),
        (
            JobQuery {
                job_type: Some("upscale".into()),
                ..all.clone()
            },
            7,
        ),
        (
            JobQuery {
                job_type: Some("controlnet".into()),
                status: Some("failed".into()),
                ..all.clone()
            },
            1,
        ),
        (
            JobQuery {
                workflow_id: Some(wf),
                ..all.clone()
            },
            1,
        ),
        (
            JobQuery {
                status: Some("nonexistent".into()),
                ..all.clone()
            },
            0,
        ),
    ] {
        assert_eq!(
            env.assert_same_jobs(query.clone()).await,
            expected,
            "{query:?}"
        );
    }
    // Pages of 3 (4 pages), of exactly the size of a filter's result (no empty last
    // page), an empty page, and a start after an id in the middle.
    assert_eq!(
        env.assert_same_jobs(JobQuery {
            limit: 3,
            ..JobQuery::default()
        })
        .await,
        10
    );
    assert_eq!(
        env.assert_same_jobs(JobQuery {
            limit: 4,
            status: Some("pending".into()),
            ..JobQuery::default()
        })
        .await,
        4
    );
    let empty = env
        .full
        .jobs(&JobQuery {
            limit: 0,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert!(empty.items.is_empty() && empty.next_cursor.is_none());
    env.assert_same_jobs(JobQuery {
        limit: 2,
        after: Some(failed),
        ..JobQuery::default()
    })
    .await;

    let far_past = DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let since_waiting = created_at(env.memory.job(waiting).await.unwrap());
    for since in [
        None,
        Some(far_past),
        Some(since_waiting),
        Some(Utc::now() + chrono::Duration::days(1)),
    ] {
        let full = env.full.job_stats(since).await.unwrap();
        assert_eq!(
            full,
            env.memory.job_stats(since).await.unwrap(),
            "since {since:?}"
        );
    }
    let stats = env.full.job_stats(None).await.unwrap();
    assert_eq!(stats.total, 10);
    assert_eq!(stats.by_status.get("pending"), Some(&4));
    assert_eq!(stats.by_type.get("upscale"), Some(&7));

    env.finish().await;
}

#[tokio::test]
async fn workflows_match_the_embedded_model() {
    let mut env = Env::new("read_full_workflows").await;

    // Running, one of three steps done.
    let (running, jobs) = env
        .create_workflow(workflow(
            "three steps",
            vec![
                step("text-to-image", vec![]),
                step("upscale", vec![0]),
                step("controlnet", vec![0, 1]),
            ],
        ))
        .await;
    env.job(jobs[0], assign()).await;
    env.workflow(
        running,
        WorkflowCommand::RecordStepStarted { step_index: 0 },
    )
    .await;
    env.job(
        jobs[0],
        JobCommand::Complete(CompleteJob {
            worker_id: None,
            result: json!({"image": "a.png"}),
            duration_ms: None,
        }),
    )
    .await;
    env.workflow(
        running,
        WorkflowCommand::RecordStepCompleted {
            step_index: 0,
            job_id: jobs[0],
            result: json!({"image": "a.png"}),
        },
    )
    .await;
    env.job(jobs[1], JobCommand::Release).await;

    // Failed: its only step failed for good.
    let (failed, failed_jobs) = env
        .create_workflow(workflow("fails", vec![step("upscale", vec![])]))
        .await;
    env.job(failed_jobs[0], assign()).await;
    env.workflow(failed, WorkflowCommand::RecordStepStarted { step_index: 0 })
        .await;
    env.job(failed_jobs[0], fail(false)).await;
    env.workflow(
        failed,
        WorkflowCommand::RecordStepFailed {
            step_index: 0,
            job_id: failed_jobs[0],
            error: json!({"code": "OOM", "message": "out of memory"}),
        },
    )
    .await;

    // Completed.
    let (completed, completed_jobs) = env
        .create_workflow(workflow("done", vec![step("upscale", vec![])]))
        .await;
    env.job(completed_jobs[0], assign()).await;
    env.workflow(
        completed,
        WorkflowCommand::RecordStepStarted { step_index: 0 },
    )
    .await;
    env.job(
        completed_jobs[0],
        JobCommand::Complete(CompleteJob {
            worker_id: None,
            result: json!(null),
            duration_ms: None,
        }),
    )
    .await;
    env.workflow(
        completed,
        WorkflowCommand::RecordStepCompleted {
            step_index: 0,
            job_id: completed_jobs[0],
            result: json!(null),
        },
    )
    .await;

    // Cancelled, with its step job cancelled.
    let (cancelled, cancelled_jobs) = env
        .create_workflow(workflow("cancel me", vec![step("upscale", vec![])]))
        .await;
    env.workflow(cancelled, WorkflowCommand::Cancel { reason: None })
        .await;
    env.job(cancelled_jobs[0], JobCommand::Cancel(CancelJob::default()))
        .await;

    // Created without its step jobs (as after a crash before the orchestrator ran): the
    // steps show as waiting.
    let orphan_id = Uuid::now_v7();
    let orphan = env
        .workflow(
            orphan_id,
            WorkflowCommand::Create(CreateWorkflow {
                workflow_id: orphan_id,
                job_ids: vec![Uuid::now_v7(), Uuid::now_v7()],
                description: None,
                webhook_url: None,
                ..workflow(
                    "orphan",
                    vec![step("upscale", vec![]), step("upscale", vec![0])],
                )
            }),
        )
        .await;
    assert_eq!(orphan.id, orphan_id);
    env.catch_up().await;

    for (id, status) in [
        (running, "running"),
        (failed, "failed"),
        (completed, "completed"),
        (cancelled, "cancelled"),
        (orphan_id, "pending"),
    ] {
        let full = env.full.workflow(id).await.expect("full workflow");
        let memory = env.memory.workflow(id).await.expect("memory workflow");
        assert_eq!(full, memory, "workflow {id}");
        let full = full.expect("workflow exists");
        assert_eq!(full.status, status);
        assert_eq!(full.steps.len() as u32, full.total_steps);
    }
    let view = env.full.workflow(running).await.unwrap().unwrap();
    assert_eq!(view.progress_percentage, 33);
    let step_status: Vec<&str> = view.steps.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(step_status, ["completed", "pending", "waiting"]);
    assert!(env
        .full
        .workflow(failed)
        .await
        .unwrap()
        .unwrap()
        .error
        .is_some());
    let orphan_view = env.full.workflow(orphan_id).await.unwrap().unwrap();
    assert!(orphan_view.steps.iter().all(|s| s.status == "waiting"));
    assert_eq!(env.full.workflow(Uuid::now_v7()).await.unwrap(), None);

    let all = WorkflowQuery {
        limit: 100,
        ..WorkflowQuery::default()
    };
    assert_eq!(env.assert_same_workflows(all.clone()).await, 5);
    for status in ["pending", "running", "completed", "failed", "cancelled"] {
        let n = env
            .assert_same_workflows(WorkflowQuery {
                status: Some(status.into()),
                ..all.clone()
            })
            .await;
        assert_eq!(n, 1, "{status}");
    }
    assert_eq!(
        env.assert_same_workflows(WorkflowQuery {
            limit: 2,
            ..WorkflowQuery::default()
        })
        .await,
        5
    );
    let listed = env.full.workflows(&all).await.unwrap();
    assert!(listed.items.iter().all(|w| w.steps.is_empty()));

    for since in [None, Some(Utc::now() + chrono::Duration::days(1))] {
        let full = env.full.workflow_stats(since).await.unwrap();
        assert_eq!(full, env.memory.workflow_stats(since).await.unwrap());
    }
    assert_eq!(env.full.workflow_stats(None).await.unwrap().total, 5);

    // Step jobs in lists, filtered by their workflow.
    env.assert_same_jobs(JobQuery {
        workflow_id: Some(running),
        limit: 2,
        ..JobQuery::default()
    })
    .await;

    env.finish().await;
}

#[tokio::test]
async fn pending_queue_order_and_paging_match_the_embedded_model() {
    let mut env = Env::new("read_full_pending").await;

    let mut ids = Vec::new();
    for priority in [50, 90, 10, 90, 50, 100, 0, 90, 50, 10] {
        ids.push((priority, env.submit(submit("upscale", priority)).await));
    }
    // Leave the queue: one assigned (50), one cancelled (90); one failed and back (10).
    let (_, claimed) = ids[4];
    env.job(claimed, assign()).await;
    let (_, gone) = ids[3];
    env.job(gone, JobCommand::Cancel(CancelJob::default()))
        .await;
    let (_, back) = ids[2];
    env.job(back, assign()).await;
    env.job(back, fail(true)).await;
    // Waiting jobs are not queued until released.
    let parent = ids[0].1;
    let held = env
        .submit(SubmitJob {
            depends_on: vec![parent],
            ..submit("upscale", 95)
        })
        .await;
    env.catch_up().await;

    let queue = env.assert_same_pending(None, 100).await;
    assert_eq!(queue.len(), 8);
    assert!(!queue
        .iter()
        .any(|e| e.job_id == held || e.job_id == claimed || e.job_id == gone));
    let priorities: Vec<u8> = queue.iter().map(|e| e.priority).collect();
    assert_eq!(priorities, [100, 90, 90, 50, 50, 10, 10, 0]);
    let mut expected = queue.clone();
    expected.sort_by_key(|e| (std::cmp::Reverse(e.priority), e.job_id));
    assert_eq!(
        queue, expected,
        "priority descending, FIFO within a priority"
    );

    // Paging through the queue, page sizes 1..=3, matches the whole queue.
    for size in 1..=3 {
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = env.assert_same_pending(after, size).await;
            if page.is_empty() {
                break;
            }
            after = page.last().copied();
            paged.extend(page);
        }
        assert_eq!(paged, queue, "pages of {size}");
    }
    // Resuming after entries that are no longer queued, or never were.
    for after in [
        PendingEntry {
            priority: 90,
            job_id: gone,
        },
        PendingEntry {
            priority: 50,
            job_id: claimed,
        },
        PendingEntry {
            priority: 95,
            job_id: held,
        },
        PendingEntry {
            priority: 75,
            job_id: Uuid::nil(),
        },
        PendingEntry {
            priority: 50,
            job_id: Uuid::max(),
        },
        PendingEntry {
            priority: 0,
            job_id: Uuid::max(),
        },
        PendingEntry {
            priority: 100,
            job_id: Uuid::nil(),
        },
    ] {
        env.assert_same_pending(Some(after), 4).await;
    }
    assert!(env.full.pending(None, 0).await.unwrap().is_empty());

    // Released: queued at its own priority.
    env.job(held, JobCommand::Release).await;
    env.catch_up().await;
    let queue = env.assert_same_pending(None, 2).await;
    assert_eq!(queue[1].job_id, held);

    env.finish().await;
}

#[tokio::test]
async fn checkpoints_status_rebuild_and_health() {
    let mut env = Env::new("read_full_status").await;
    for priority in [10, 20, 30] {
        let id = env.submit(submit("upscale", priority)).await;
        env.job(id, assign()).await;
    }
    let last = env.last.expect("commands wrote events");
    // Not applied yet: neither model has reached the last write.
    assert!(!env.full.has_reached(Model::Hot, last).await.unwrap());
    assert!(!env.full.has_reached(Model::Lists, last).await.unwrap());
    env.catch_up().await;
    let later = Position::new(last.partition, LogId::new(last.id.ms + 60_000, 0));
    for model in [Model::Hot, Model::Lists] {
        assert!(
            env.full.has_reached(model, last).await.unwrap(),
            "{model:?}"
        );
        assert!(
            !env.full.has_reached(model, later).await.unwrap(),
            "{model:?}"
        );
        assert_eq!(
            env.full.has_reached(model, last).await.unwrap(),
            env.memory.has_reached(model, last).await.unwrap()
        );
        assert_eq!(
            env.full.has_reached(model, later).await.unwrap(),
            env.memory.has_reached(model, later).await.unwrap()
        );
    }
    assert_eq!(env.full.mode(), "redis+postgres");

    let status = env.full.projections().await.unwrap();
    for name in ["redis", "postgres"] {
        let rows: Vec<_> = status.iter().filter(|s| s.projection == name).collect();
        assert_eq!(rows.len(), 4, "{name}: one row per partition");
        for r in rows {
            assert_eq!((r.lag, r.state.as_str()), (0, "running"), "{r:?}");
            assert!(r.last_error.is_none());
        }
    }
    let redis_row = status
        .iter()
        .find(|s| s.projection == "redis" && s.partition == last.partition)
        .unwrap();
    assert_eq!(redis_row.checkpoint, last.to_string());

    // Lag: one more event, not applied yet.
    let extra = env.submit(submit("upscale", 40)).await;
    let at = env.last.expect("position");
    let status = env.full.projections().await.unwrap();
    let lag_of = |name: &str| {
        status
            .iter()
            .find(|s| s.projection == name && s.partition == at.partition)
            .map(|s| s.lag)
    };
    assert_eq!((lag_of("redis"), lag_of("postgres")), (Some(1), Some(1)));
    env.catch_up().await;

    // Rebuild of the postgres projection in the background; the answers stay the same.
    env.full.rebuild("postgres", Offset::Start).await.unwrap();
    assert!(env.full.is_rebuilding("postgres"));
    match env.full.rebuild("postgres", Offset::Start).await {
        Err(QueryError::BadRequest { field, .. }) => assert_eq!(field, "name"),
        other => {
            // The first one may already be done on a fast machine.
            assert!(other.is_ok(), "{other:?}");
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.full.is_rebuilding("postgres") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rebuild did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = env.full.projections().await.unwrap();
    assert!(
        !status.iter().any(|s| s.projection.contains("@rebuild")),
        "{status:?}"
    );
    env.assert_same_jobs(JobQuery {
        limit: 100,
        ..JobQuery::default()
    })
    .await;
    env.assert_same_job(extra, "pending").await;

    // The redis model rebuilds as a new key generation in the background, then swaps.
    env.full.rebuild("redis", Offset::Start).await.unwrap();
    for _ in 0..500 {
        if !env.full.is_rebuilding("redis") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!env.full.is_rebuilding("redis"), "redis rebuild finished");
    env.assert_same_job(extra, "pending").await;
    for name in ["nope"] {
        match env.full.rebuild(name, Offset::Start).await {
            Err(QueryError::BadRequest { field, message }) => {
                assert_eq!(field, "name");
                assert!(message.contains("postgres"), "{message}");
            }
            other => panic!("rebuild {name}: {other:?}"),
        }
    }

    let health = env.full.health().await;
    assert_eq!(
        health,
        vec![("redis", Ok(())), ("postgres", Ok(()))],
        "{health:?}"
    );

    env.finish().await;
}

/// Known difference (reported, not fixed here): the `redis` projection does not clear a
/// job's `stage` when the job is assigned again or goes back to pending after a retryable
/// failure, while the domain (and so the embedded model and the `postgres` projection)
/// does.
#[tokio::test]
async fn stage_is_cleared_by_a_retry() {
    let mut env = Env::new("read_full_stage").await;
    let id = env.submit(submit("upscale", 50)).await;
    env.job(id, assign()).await;
    env.job(id, progress(30, Some("render"))).await;
    env.job(id, fail(true)).await;
    env.catch_up().await;
    env.assert_same_job(id, "pending").await;
    env.finish().await;
}

/// Known difference (reported, not fixed here): `<rm>:job:<id>:depends_on` is a Redis set,
/// which loses the order dependencies were submitted in; `FullReadSide` answers them sorted
/// by id, the embedded model in submission order.
#[tokio::test]
async fn depends_on_keeps_submission_order() {
    let mut env = Env::new("read_full_deps_order").await;
    let older = env.submit(submit("upscale", 50)).await;
    let newer = env.submit(submit("upscale", 50)).await;
    let child = env
        .submit(SubmitJob {
            depends_on: vec![newer, older],
            ..submit("upscale", 50)
        })
        .await;
    env.catch_up().await;
    env.assert_same_job(child, "waiting").await;
    env.finish().await;
}

//! The `postgres` read model on a fresh PostgreSQL database: domain-decided lifecycles
//! become rows, and a replay of everything from the start changes no row.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use jobsource_domain::job::{
    AssignJob, CancelJob, CompleteJob, FailJob, Job, JobCommand, JobError, ReportProgress,
    SubmitJob,
};
use jobsource_domain::workflow::{CreateWorkflow, StepSpec, Workflow, WorkflowCommand};
use jobsource_domain::{job_stream, workflow_stream};
use jobsource_eventstore::{Cursor, EventStore, MemoryStore, StoreConfig};
use jobsource_projections::{catch_up, checkpoint, migrate, PostgresReadModel};
use jobsource_tests::{run_commands, TestDatabase};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn assign() -> JobCommand {
    JobCommand::Assign(AssignJob {
        lease_expires_at: None,
        worker_id: "w1".into(),
        machine_id: "m1".into(),
    })
}

fn submit(id: Uuid) -> JobCommand {
    JobCommand::Submit(SubmitJob {
        job_id: id,
        job_type: "upscale".into(),
        priority: 70,
        max_retries: 1,
        ..Default::default()
    })
}

async fn snapshot(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for table in ["jobs", "workflows", "workflow_steps"] {
        let q = format!("SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1");
        rows.extend(
            sqlx::query_scalar::<_, String>(&q)
                .fetch_all(pool)
                .await
                .expect("snapshot"),
        );
    }
    rows
}

#[tokio::test]
async fn lifecycles_become_rows_and_replay_changes_nothing() {
    let store = MemoryStore::new(StoreConfig {
        partitions: 4,
        ..StoreConfig::default()
    });
    let (done, failed, cancelled) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    run_commands::<Job>(
        &store,
        &job_stream(done),
        vec![
            submit(done),
            assign(),
            JobCommand::ReportProgress(ReportProgress {
                worker_id: None,
                progress: 40,
                stage: Some("render".into()),
                message: None,
            }),
            JobCommand::Complete(CompleteJob {
                worker_id: None,
                result: json!({"url": "x"}),
                duration_ms: Some(5),
            }),
        ],
    )
    .await;
    let fail = || {
        JobCommand::Fail(FailJob {
            retry_at: None,
            worker_id: None,
            error: JobError {
                code: "OOM".into(),
                message: "out of memory".into(),
            },
            retryable: true,
        })
    };
    run_commands::<Job>(
        &store,
        &job_stream(failed),
        vec![submit(failed), assign(), fail(), assign(), fail()],
    )
    .await;
    run_commands::<Job>(
        &store,
        &job_stream(cancelled),
        vec![submit(cancelled), JobCommand::Cancel(CancelJob::default())],
    )
    .await;
    let wf = Uuid::now_v7();
    let job_ids = vec![Uuid::now_v7(), Uuid::now_v7()];
    run_commands::<Workflow>(
        &store,
        &workflow_stream(wf),
        vec![
            WorkflowCommand::Create(CreateWorkflow {
                workflow_id: wf,
                job_ids: job_ids.clone(),
                name: "two steps".into(),
                description: None,
                steps: vec![
                    StepSpec {
                        job_type: "a".into(),
                        prompt: None,
                        parameters: None,
                        depends_on: vec![],
                    },
                    StepSpec {
                        job_type: "b".into(),
                        prompt: None,
                        parameters: None,
                        depends_on: vec![0],
                    },
                ],
                webhook_url: None,
            }),
            WorkflowCommand::RecordStepStarted { step_index: 0 },
            WorkflowCommand::RecordStepCompleted {
                step_index: 0,
                job_id: job_ids[0],
                result: json!(1),
            },
            WorkflowCommand::RecordStepStarted { step_index: 1 },
            WorkflowCommand::RecordStepCompleted {
                step_index: 1,
                job_id: job_ids[1],
                result: json!(2),
            },
        ],
    )
    .await;

    let db = TestDatabase::create().await;
    let pool = db.pool(2).await.expect("pool");
    migrate::migrate(&pool).await.expect("migrate");
    let applied = catch_up(&store, &pool, &PostgresReadModel, 3)
        .await
        .unwrap();
    assert_eq!(applied, 4 + 5 + 2 + 6);

    let rows: Vec<(Uuid, String, i32, i64, i32)> = sqlx::query_as(
        "SELECT id, status, progress, version, retry_count FROM jobs ORDER BY created_at, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let by_id = |id: Uuid| rows.iter().find(|r| r.0 == id).cloned().unwrap();
    assert_eq!(by_id(done).1, "completed");
    assert_eq!((by_id(done).2, by_id(done).3), (100, 4));
    assert_eq!((by_id(failed).1.as_str(), by_id(failed).4), ("failed", 2));
    assert_eq!(by_id(cancelled).1, "cancelled");
    let (status, completed_steps, version): (String, i32, i64) =
        sqlx::query_as("SELECT status, completed_steps, version FROM workflows WHERE id = $1")
            .bind(wf)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), completed_steps, version),
        ("completed", 2, 6)
    );
    let steps: Vec<(i32, String)> = sqlx::query_as(
        "SELECT step_index, status FROM workflow_steps WHERE workflow_id = $1 ORDER BY 1",
    )
    .bind(wf)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        steps,
        vec![(0, "completed".into()), (1, "completed".into())]
    );

    // Replaying everything from the start re-delivers every event: no row changes.
    let before = snapshot(&pool).await;
    checkpoint::reset(&pool, "postgres", &Cursor::start(store.partitions()))
        .await
        .unwrap();
    assert_eq!(
        catch_up(&store, &pool, &PostgresReadModel, 5)
            .await
            .unwrap(),
        applied
    );
    assert_eq!(snapshot(&pool).await, before);

    pool.close().await;
    db.drop_db().await;
}

//! The `redis` read model on real Redis (unique namespaces): seed-compatible keys from
//! domain-decided lifecycles, the pending zset by priority, and a replay from the start
//! that changes no key.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use jobsource_domain::job::{
    AssignJob, CompleteJob, FailJob, Job, JobCommand, JobError, SubmitJob,
};
use jobsource_domain::job_stream;
use jobsource_eventstore::{Cursor, EventStore, MemoryStore, StoreConfig};
use jobsource_projections::RedisReadModel;
use jobsource_tests::{cleanup_prefix, redis_url, run_commands, unique_prefix};
use redis::AsyncCommands;
use uuid::Uuid;

async fn run(store: &MemoryStore, id: Uuid, commands: Vec<JobCommand>) {
    run_commands::<Job>(store, &job_stream(id), commands).await;
}

fn submit(id: Uuid, priority: u8, depends_on: Vec<Uuid>) -> JobCommand {
    JobCommand::Submit(SubmitJob {
        job_id: id,
        job_type: "upscale".into(),
        priority,
        depends_on,
        ..Default::default()
    })
}

fn assign() -> JobCommand {
    JobCommand::Assign(AssignJob {
        lease_expires_at: None,
        worker_id: "w".into(),
        machine_id: "m".into(),
    })
}

/// Every key of the namespace but the checkpoint, with its content in a comparable form.
async fn snapshot(
    conn: &mut redis::aio::MultiplexedConnection,
    rm: &str,
) -> BTreeMap<String, String> {
    let keys: Vec<String> = conn.keys(format!("{rm}:*")).await.unwrap();
    let mut out = BTreeMap::new();
    for k in keys.into_iter().filter(|k| !k.ends_with(":checkpoint")) {
        let kind: String = redis::cmd("TYPE").arg(&k).query_async(conn).await.unwrap();
        let value = match kind.as_str() {
            "hash" => format!(
                "{:?}",
                conn.hgetall::<_, BTreeMap<String, String>>(&k)
                    .await
                    .unwrap()
            ),
            "zset" => format!(
                "{:?}",
                conn.zrange_withscores::<_, Vec<(String, f64)>>(&k, 0, -1)
                    .await
                    .unwrap()
            ),
            "set" => {
                let mut m: Vec<String> = conn.smembers(&k).await.unwrap();
                m.sort();
                format!("{m:?}")
            }
            other => other.to_owned(),
        };
        out.insert(k, value);
    }
    out
}

#[tokio::test]
async fn seed_keys_from_lifecycles_and_replay_changes_nothing() {
    let store = MemoryStore::new(StoreConfig {
        partitions: 4,
        ..StoreConfig::default()
    });
    let (low, high, done, failed, parent, child) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    run(&store, low, vec![submit(low, 10, vec![])]).await;
    run(&store, high, vec![submit(high, 90, vec![])]).await;
    run(
        &store,
        done,
        vec![
            submit(done, 50, vec![]),
            assign(),
            JobCommand::Complete(CompleteJob {
                worker_id: None,
                result: serde_json::json!({"ok": 1}),
                duration_ms: None,
            }),
        ],
    )
    .await;
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
    // Fails once (back to pending at its priority), then assigned again.
    run(
        &store,
        failed,
        vec![submit(failed, 70, vec![]), assign(), fail()],
    )
    .await;
    run(&store, parent, vec![submit(parent, 50, vec![])]).await;
    run(
        &store,
        child,
        vec![submit(child, 60, vec![parent]), JobCommand::Release],
    )
    .await;

    let rm = unique_prefix("rm");
    let client = redis::Client::open(redis_url()).unwrap();
    let manager = client.get_connection_manager().await.unwrap().into();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let model = RedisReadModel::new(manager, &rm);
    model.catch_up(&store, 2).await.unwrap();

    let status: String = conn
        .hget(format!("{rm}:job:{done}"), "status")
        .await
        .unwrap();
    assert_eq!(status, "completed");
    let version: u64 = conn
        .hget(format!("{rm}:job:{done}"), "version")
        .await
        .unwrap();
    assert_eq!(version, 3);
    let completed: Vec<String> = conn.smembers(format!("{rm}:jobs:completed")).await.unwrap();
    assert_eq!(completed, vec![done.to_string()]);
    // Pending: highest priority first; the failed job is back at its own priority and the
    // released child at its own.
    let pending: Vec<(String, f64)> = conn
        .zrevrange_withscores(format!("{rm}:jobs:pending"), 0, -1)
        .await
        .unwrap();
    let expected: Vec<(String, f64)> = vec![
        (high.to_string(), 90.0),
        (failed.to_string(), 70.0),
        (child.to_string(), 60.0),
        (parent.to_string(), 50.0),
        (low.to_string(), 10.0),
    ];
    assert_eq!(pending, expected);
    let deps: Vec<String> = conn
        .smembers(format!("{rm}:job:{child}:depends_on"))
        .await
        .unwrap();
    assert_eq!(deps, vec![parent.to_string()]);
    let dependents: Vec<String> = conn
        .smembers(format!("{rm}:job:{parent}:dependents"))
        .await
        .unwrap();
    assert_eq!(dependents, vec![child.to_string()]);
    let retry: String = conn
        .hget(format!("{rm}:job:{failed}"), "retry_count")
        .await
        .unwrap();
    assert_eq!(retry, "1");

    // Re-deliver everything: nothing changes.
    let before = snapshot(&mut conn, &rm).await;
    model
        .reset(&Cursor::start(store.partitions()))
        .await
        .unwrap();
    model.catch_up(&store, 3).await.unwrap();
    assert_eq!(snapshot(&mut conn, &rm).await, before);

    cleanup_prefix(&redis_url(), &rm).await.unwrap();
}

#[test]
fn empty_namespace_gives_the_seed_bare_keys() {
    let k = jobsource_projections::redis::model::RmKeys::new("");
    assert_eq!(k.job("1"), "job:1");
    assert_eq!(k.key("jobs:pending"), "jobs:pending");
    assert_eq!(k.workflow("w"), "workflow:w");
    let k = jobsource_projections::redis::model::RmKeys::new("js");
    assert_eq!(k.job("1"), "js:job:1");
}

/// A model that applied part of an entity's events (its checkpoint later moved back: an
/// overlapping replay) ends equal to one built from scratch: the folded path hands such
/// entities to the event-by-event path.
#[tokio::test]
async fn overlapping_replay_of_partly_applied_entities_matches_a_fresh_build() {
    let store = MemoryStore::new(StoreConfig {
        partitions: 1,
        ..StoreConfig::default()
    });
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        let complete = JobCommand::Complete(CompleteJob {
            worker_id: None,
            result: serde_json::json!({"done": true}),
            duration_ms: None,
        });
        run(
            &store,
            *id,
            vec![submit(*id, 10 * i as u8, vec![]), assign(), complete],
        )
        .await;
    }
    let prefix = unique_prefix("rm_overlap");
    let client = redis::Client::open(redis_url()).unwrap();
    let cm: jobsource_eventstore::redis::RedisConn = redis::aio::ConnectionManager::new(client)
        .await
        .unwrap()
        .into();
    let partly = RedisReadModel::new(cm.clone(), &format!("{prefix}:a"));
    // Apply the first two events: the first job is at version 2 of 3.
    partly.run_batch(&store, 0, 2).await.unwrap();
    // Move the checkpoint back to the start: every batch now overlaps what was applied.
    partly.reset(&Cursor::start(1)).await.unwrap();
    partly.catch_up(&store, 4).await.unwrap();
    let fresh = RedisReadModel::new(cm, &format!("{prefix}:b"));
    fresh.catch_up(&store, 1000).await.unwrap();
    let mut conn = jobsource_tests::redis_connection(&redis_url())
        .await
        .unwrap();
    let a = snapshot(&mut conn, &format!("{prefix}:a")).await;
    let b = snapshot(&mut conn, &format!("{prefix}:b")).await;
    assert_eq!(a.len(), b.len());
    assert_eq!(
        a.values().collect::<Vec<_>>(),
        b.values().collect::<Vec<_>>()
    );
    cleanup_prefix(&redis_url(), &prefix).await.unwrap();
}

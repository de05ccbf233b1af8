//! Two `jobsource serve` processes on one store share every consumer's partitions through
//! leases: each owns some, every event is applied once per consumer, and when one is
//! killed with SIGKILL the other takes its partitions over once their leases run out,
//! with nothing lost or applied twice.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{post, Serve};
use jobsource_tests::{cleanup_prefix, redis_target, unique_prefix, TestDatabase};
use serde_json::{json, Value};

const CONSUMERS: [&str; 5] = ["archive", "orchestrator", "postgres", "redis", "webhooks"];
const TTL_MS: u64 = 2000;

async fn rows(base: &str) -> Vec<Value> {
    let body: Value = reqwest::get(format!("{base}/v1/projections"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["projections"].as_array().cloned().unwrap_or_default()
}

/// Owners per consumer (consumer -> set of owners), once every row has one and no lag.
async fn settled_owners(base: &str) -> Option<BTreeMap<String, BTreeSet<String>>> {
    let rows = rows(base).await;
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        let name = r["projection"].as_str().unwrap_or_default();
        if !CONSUMERS.contains(&name) {
            continue;
        }
        let owner = r["owner"].as_str()?;
        if r["lag"] != 0 || r["state"] != "running" || r["lease_expires_at"].is_null() {
            return None;
        }
        owners
            .entry(name.to_owned())
            .or_default()
            .insert(owner.to_owned());
    }
    (owners.len() == CONSUMERS.len()).then_some(owners)
}

async fn submit(base: &str) -> String {
    let (s, b) = post(base, "/v1/jobs", json!({"type": "t"})).await;
    assert_eq!(s, 201, "{b}");
    b["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_and_the_survivor_takes_over() {
    let prefix = unique_prefix("scale_out");
    let db = TestDatabase::create().await;
    let ttl = TTL_MS.to_string();
    let a = Serve::start_with(
        &prefix,
        &db.url,
        &[
            ("JOBSOURCE_INSTANCE_ID", "a"),
            ("JOBSOURCE_LEASE_TTL_MS", &ttl),
        ],
    )
    .await;
    let b = Serve::start_with(
        &prefix,
        &db.url,
        &[
            ("JOBSOURCE_INSTANCE_ID", "b"),
            ("JOBSOURCE_LEASE_TTL_MS", &ttl),
        ],
    )
    .await;
    let mut jobs = Vec::new();
    for i in 0..40 {
        jobs.push(submit(if i % 2 == 0 { &a.base } else { &b.base }).await);
    }

    // Each instance owns part of every consumer's partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(owners) = settled_owners(&b.base).await {
            if owners.values().all(|o| o.len() == 2) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never shared: {:?}",
            rows(&b.base).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A dies without a word; the survivor takes every partition over after the TTL.
    a.kill9();
    let killed = Instant::now();
    for _ in 0..20 {
        jobs.push(submit(&b.base).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let took = loop {
        if let Some(owners) = settled_owners(&b.base).await {
            if owners.values().all(|o| o.len() == 1 && o.contains("b")) {
                break killed.elapsed();
            }
        }
        assert!(
            Instant::now() < deadline,
            "never taken over: {:?}",
            rows(&b.base).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("takeover after {took:?} (lease TTL {TTL_MS} ms)");
    // Generous against a slow CI box; the measured figure is in README.md.
    assert!(
        took < Duration::from_millis(TTL_MS) + Duration::from_secs(8),
        "{took:?}"
    );

    // Nothing lost: every job is in the read model; nothing applied twice: each archive
    // batch counted once in its checkpoint equals the rows it wrote.
    for id in &jobs {
        let v: Value = reqwest::get(format!("{}/v1/jobs/{id}", b.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "pending", "{v}");
    }
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let counted: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(events), 0)::bigint FROM projection_checkpoints WHERE projection = 'archive'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let submitted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'job_submitted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(submitted, jobs.len() as i64);
    assert_eq!(archived, counted, "an archive batch was applied twice");
    let jobs_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs_rows, jobs.len() as i64);
    pool.close().await;
    drop(b);
    cleanup_prefix(redis_target(), &prefix).await.unwrap();
    db.drop_db().await;
}

//! `jobsource bench lifecycle`: whole job lifecycles over HTTP, the workload of the BullMQ
//! peer (`/work/shared/peers/bullmq`).
//!
//! N jobs with a ~`--payload-bytes` string parameter are submitted by `--producers`
//! concurrent loops (`POST /v1/jobs`, one job per call, job type `bench-<random>` so only
//! this run's jobs are claimed). At the same time `--workers` concurrent loops claim
//! (`POST /v1/workers/w<i>/claim` with `wait_ms`), report progress 50 once and complete
//! with `{ok: true}`. The complete call carries `next`, so its answer hands the worker its
//! next job (BullMQ's "complete fetches the next job"); `--no-next` claims separately
//! after every complete instead.
//!
//! Measured: seconds from the first submit to the last complete's 200, jobs/s, end-to-end
//! latency per job (just before its submit call -> its complete's 200) p50/p99, empty
//! claims (204s and `next: null`), the latency of each call, and correctness: every
//! submitted job completed exactly once, none claimed twice, and (after the clock stops)
//! each job's audit trail (`GET /v1/jobs/{id}/events`, all or `--verify-sample` of them)
//! holds exactly one `job_assigned` and one `job_completed`. The exit code is non-zero
//! unless all N jobs pass.
//!
//! The server is started in this process, embedded by default or durable with
//! `--durable` / `--redis-url` / `--database-url` (on a fresh key prefix and a fresh
//! PostgreSQL database, both removed afterwards unless `--keep`), unless `--url` names a
//! running one. The output is a table, then one JSON line.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::report::{self, round};
use crate::serve::{ServeConfig, Server};

mod loops;
mod setup;
use loops::*;
pub use setup::run;
use setup::*;

/// Redis of `--durable` when `--redis-url` is not given.
const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";
/// PostgreSQL server of `--durable` when `--database-url` is not given.
const DEFAULT_DATABASE: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Options of `bench lifecycle`.
#[derive(Debug, Clone, Args)]
pub struct LifecycleArgs {
    /// Jobs to submit and complete.
    #[arg(long, default_value_t = 5000)]
    pub jobs: u64,
    /// Size of the string parameter of every job, in bytes.
    #[arg(long, default_value_t = 400)]
    pub payload_bytes: usize,
    /// Concurrent submit loops.
    #[arg(long, default_value_t = 16)]
    pub producers: usize,
    /// Concurrent worker loops (claim, progress, complete).
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Claim with a separate call after every complete instead of the complete's `next`.
    #[arg(long)]
    pub no_next: bool,
    /// `wait_ms` of the claims (long poll when nothing is ready).
    #[arg(long, default_value_t = 1000)]
    pub wait_ms: u64,
    /// `wait_ms` of the complete's `next` claim. Default 0: like BullMQ's fetch-next, the
    /// complete answers at once (a `null` next is followed by a long-polling claim), so a
    /// job's completion is never held back by the wait for the next one.
    #[arg(long, default_value_t = 0)]
    pub next_wait_ms: u64,
    /// A running server to load instead of starting one (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    pub url: Option<String>,
    /// `Authorization: Bearer` key for `--url`.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Start the in-process server durable on the local Redis and PostgreSQL.
    #[arg(long)]
    pub durable: bool,
    /// Redis of the durable in-process server (implies `--durable`).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes of the durable in-process server, comma-separated
    /// (implies `--durable`; instead of `--redis-url`).
    #[arg(long, env = "JOBSOURCE_REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,
    /// PostgreSQL server of the durable in-process server (implies `--durable`); the
    /// bench creates and drops its own database on it.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Check the audit trail of this many jobs after the run (0: all of them).
    #[arg(long, default_value_t = 0)]
    pub verify_sample: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Keep the durable run's keys and database.
    #[arg(long)]
    pub keep: bool,
}

/// Submits, works and verifies the jobs against `base`; prints the report.
async fn workload(args: &LifecycleArgs, base: &str, mode: &str) -> anyhow::Result<()> {
    let connections = args.workers + args.producers;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &args.api_key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))?,
        );
    }
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()?;
    let health = http.get(format!("{base}/health")).send().await?;
    if !health.status().is_success() {
        eprintln!("warning: /health answered {}", health.status());
    }

    let job_type = format!("bench-{:08x}", rand::random::<u32>());
    let shared = Arc::new(Shared {
        http: http.clone(),
        base: base.to_owned(),
        job_type: job_type.clone(),
        blob: "x".repeat(args.payload_bytes),
        jobs: args.jobs,
        no_next: args.no_next,
        wait_ms: args.wait_ms,
        next_wait_ms: args.next_wait_ms,
        deadline: Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0)),
        next_submit: AtomicU64::new(0),
        submitted: AtomicU64::new(0),
        producers_done: AtomicBool::new(false),
        completed: AtomicU64::new(0),
        empty_claims: AtomicU64::new(0),
        duplicate_claims: AtomicU64::new(0),
        claimed: Mutex::new(HashSet::new()),
        errors: Default::default(),
    });

    let bar = indicatif::ProgressBar::new(args.jobs);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} jobs completed, {per_sec}, ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message("lifecycle");
    let ticker = {
        let (s, bar) = (shared.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(s.completed.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Producers and workers start together.
    let workers: Vec<_> = (0..args.workers)
        .map(|i| tokio::spawn(worker(shared.clone(), i)))
        .collect();
    let producers: Vec<_> = (0..args.producers)
        .map(|_| tokio::spawn(producer(shared.clone())))
        .collect();
    let mut times = CallTimes::new()?;
    let mut submit_at: HashMap<Uuid, Instant> = HashMap::with_capacity(args.jobs as usize);
    let mut first_submit: Option<Instant> = None;
    for p in producers {
        let p = p.await??;
        times.merge(&p.times)?;
        submit_at.extend(p.submits);
        first_submit = match (first_submit, p.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    shared.producers_done.store(true, Ordering::SeqCst);
    let mut done_at: HashMap<Uuid, (Instant, u32)> = HashMap::with_capacity(args.jobs as usize);
    for w in workers {
        let w = w.await??;
        times.merge(&w.times)?;
        for (id, t) in w.completes {
            let e = done_at.entry(id).or_insert((t, 0));
            e.0 = e.0.min(t);
            e.1 += 1;
        }
    }
    ticker.abort();
    bar.set_position(shared.completed.load(Ordering::Relaxed));
    bar.finish_and_clear();
    let timed_out = Instant::now() >= shared.deadline;

    // Clock and latencies.
    let mut latency = histogram()?;
    let mut last_done: Option<Instant> = None;
    for (id, (t, _)) in &done_at {
        last_done = Some(last_done.map_or(*t, |l| l.max(*t)));
        if let Some(s) = submit_at.get(id) {
            latency.saturating_record(micros(t.saturating_duration_since(*s)));
        }
    }
    let seconds = match (first_submit, last_done) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let jobs_per_sec = if seconds > 0.0 {
        done_at.len() as f64 / seconds
    } else {
        0.0
    };

    // Correctness: each submitted job completed once, claimed once, one assignment and
    // one completion in its trail.
    let mut ids: Vec<Uuid> = submit_at.keys().copied().collect();
    ids.sort_unstable();
    let sample: Vec<Uuid> = if args.verify_sample == 0 || args.verify_sample >= ids.len() {
        ids.clone()
    } else {
        let step = ids.len() as f64 / args.verify_sample as f64;
        (0..args.verify_sample)
            .map(|k| ids[(k as f64 * step) as usize])
            .collect()
    };
    let events = check_events(&http, base, sample, connections).await;
    let duplicate_claims = shared.duplicate_claims.load(Ordering::Relaxed);
    let claimed = shared
        .claimed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    let (mut once, mut twice) = (0u64, 0u64);
    for id in &ids {
        match done_at.get(id).map_or(0, |d| d.1) {
            1 if !events.bad.contains(id) => once += 1,
            1 | 0 => {}
            _ => twice += 1,
        }
    }
    let completed_once = if duplicate_claims == 0 { once } else { 0 };
    let errors: Vec<u64> = shared
        .errors
        .iter()
        .map(|e| e.load(Ordering::Relaxed))
        .collect();
    let empty_claims = shared.empty_claims.load(Ordering::Relaxed);
    let (p50, p99) = (ms(&latency, 0.50), ms(&latency, 0.99));
    let call = |h: &Histogram<u64>| {
        format!(
            "{} calls, p50 {:.3} / p99 {:.3} ms",
            h.len(),
            ms(h, 0.5),
            ms(h, 0.99)
        )
    };

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rows = vec![
        ("mode", format!("{mode} ({base}), job type {job_type}")),
        ("cores", cores.to_string()),
        (
            "jobs / workers / producers",
            format!("{} / {} / {}", args.jobs, args.workers, args.producers),
        ),
        (
            "next claim",
            if args.no_next {
                format!("separate claim call (wait_ms {})", args.wait_ms)
            } else {
                format!("complete's next (wait_ms {})", shared.next_wait_ms)
            },
        ),
        (
            "seconds (first submit -> last completion)",
            format!("{seconds:.3}"),
        ),
        ("jobs/s", format!("{jobs_per_sec:.1}")),
        (
            "latency p50 / p99 ms (submit -> complete 200)",
            format!("{p50:.3} / {p99:.3}"),
        ),
        (
            "completed exactly once",
            format!(
                "{completed_once} of {}{}",
                args.jobs,
                if twice > 0 {
                    format!(" ({twice} more than once)")
                } else {
                    String::new()
                }
            ),
        ),
        (
            "submitted / claimed (distinct)",
            format!("{} / {claimed}", submit_at.len()),
        ),
        (
            "claims: empty (204, next null) / duplicate",
            format!("{empty_claims} / {duplicate_claims}"),
        ),
        (
            "audit trails checked / bad",
            format!("{} / {}", events.checked, events.bad.len()),
        ),
        (
            "errors submit / claim / progress / complete",
            errors
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
        ),
        ("call: submit", call(&times.submit)),
        ("call: claim (200)", call(&times.claim)),
        ("call: claim (204)", call(&times.claim_empty)),
        ("call: progress", call(&times.progress)),
        ("call: complete", call(&times.complete)),
        ("timed out", timed_out.to_string()),
    ];
    let mut out = Map::new();
    out.insert("system".into(), json!("jobsource"));
    out.insert("mode".into(), json!(mode));
    out.insert("jobs".into(), json!(args.jobs));
    out.insert("workers".into(), json!(args.workers));
    out.insert("seconds".into(), json!(round(seconds, 3)));
    out.insert("jobs_per_sec".into(), json!(round(jobs_per_sec, 1)));
    out.insert("p50_ms".into(), json!(round(p50, 3)));
    out.insert("p99_ms".into(), json!(round(p99, 3)));
    out.insert("completed_once".into(), json!(completed_once));
    out.insert("empty_claims".into(), json!(empty_claims));
    out.insert("producers".into(), json!(args.producers));
    out.insert("next".into(), json!(!args.no_next));
    out.insert("duplicate_claims".into(), json!(duplicate_claims));
    out.insert("completed_twice_or_more".into(), json!(twice));
    out.insert("events_checked".into(), json!(events.checked));
    out.insert("events_bad".into(), json!(events.bad.len()));
    out.insert("errors".into(), json!(errors.iter().sum::<u64>()));
    for (name, h) in [
        ("submit", &times.submit),
        ("claim", &times.claim),
        ("progress", &times.progress),
        ("complete", &times.complete),
    ] {
        out.insert(format!("{name}_p50_ms"), json!(round(ms(h, 0.5), 3)));
    }
    report::print("jobsource bench lifecycle", &rows, &out);
    anyhow::ensure!(
        completed_once == args.jobs && twice == 0 && !timed_out,
        "{completed_once} of {} jobs completed exactly once{}",
        args.jobs,
        if timed_out { " (timed out)" } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }

    #[test]
    fn claim_answers_name_their_job() {
        let id = Uuid::now_v7();
        assert_eq!(
            claimed_id(&json!({"job": {"id": id.to_string()}, "version": 2})),
            Some(id)
        );
        assert_eq!(claimed_id(&Value::Null), None);
    }
}

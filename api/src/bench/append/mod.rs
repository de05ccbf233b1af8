//! `jobsource bench append`: job lifecycles decided by the domain, appended concurrently.
//!
//! Each job's events are a real lifecycle: `job_submitted`, `job_assigned`, E-3
//! `job_progress`, `job_completed`, each decided by the domain from the job's current state.
//! C writers share the jobs: with J >= C each writer owns J/C jobs; with J < C several
//! writers work on the same job at once (`--jobs 1 --concurrency 64` is the contention
//! test). Every write loads the stream's current version (catching up on events written by
//! others), decides, appends with `Exact(version)` and retries on conflict. By default
//! writers in this process serialize per stream ([`StreamLocks`], which also holds their
//! shared folded state), so only cross-process writers could conflict; `--no-serialize`
//! shows pure optimistic racing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use jobsource_domain::job::{Job, JobCommand};
use jobsource_eventstore::typed::{job_event_from, to_new_event};
use jobsource_eventstore::{
    AppendRequest, AppendResult, EventStore, ExpectedVersion, MemoryStore, NewEvent, RedisStore,
    StoreConfig, StoreError, StreamLocks,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::ceiling;
use super::report::{self, round, Latencies};

mod chain;
mod write;
use write::*;

/// Options of `bench append`.
#[derive(Debug, Clone, Args)]
pub struct AppendArgs {
    /// Number of jobs (aggregates).
    #[arg(long, default_value_t = 2000)]
    pub jobs: u64,
    /// Events per job (>= 3): submit, assign, E-3 progress, complete.
    #[arg(long, default_value_t = 10)]
    pub events_per_job: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    /// Approximate size of each event's payload (`data`) in bytes.
    #[arg(long, default_value_t = 400)]
    pub payload_bytes: usize,
    /// Key prefix of the benchmark store (default: a fresh `bench:<uuid>`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Use the in-memory backend instead of Redis.
    #[arg(long)]
    pub memory: bool,
    #[allow(missing_docs)] // flattened: each argument has its own help
    #[command(flatten)]
    pub redis: crate::cli::RedisArgs,
    /// Partition count of the benchmark store.
    #[arg(long, env = "JOBSOURCE_PARTITIONS", default_value_t = 16)]
    pub partitions: u32,
    /// Let same-process writers race optimistically instead of queueing per stream.
    #[arg(long)]
    pub no_serialize: bool,
    /// Keep the benchmark's keys (e.g. to benchmark a rebuild over them afterwards).
    #[arg(long)]
    pub keep: bool,
    /// Skip measuring the raw Redis script ceiling.
    #[arg(long)]
    pub no_ceiling: bool,
    /// How a writer learns the current version before deciding: `store` reads the stream's
    /// version from the store on every write (and folds events it has not seen); `cache`
    /// trusts the writer's folded state and lets the `Exact` append detect staleness,
    /// reloading only on conflict (the usual aggregate-cache pattern).
    /// `cache` is the default: the `Exact` check makes the cached version safe (issue 13).
    #[arg(long, value_enum, default_value_t = Load::Cache)]
    pub load: Load,
    /// Group commit: most append commands of one partition per script call (1: each
    /// command alone, as before group commit).
    #[arg(long, env = "JOBSOURCE_GROUP_COMMIT_MAX", default_value_t = 64)]
    pub group_commit_max: usize,
    /// Group commit lanes on one Redis server (see `serve --group-commit-lanes`).
    #[arg(long, env = "JOBSOURCE_GROUP_COMMIT_LANES", default_value_t = 4)]
    pub group_commit_lanes: u32,
    /// Same-stream writers chain their decisions on the folded state and append them
    /// together in one call (per-stream serialized mode only; see `chain.rs`).
    #[arg(long, conflicts_with = "no_serialize")]
    pub chain: bool,
}

/// Where the writer's current version comes from (see `--load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Load {
    /// Ask the store every time.
    Store,
    /// Trust the folded state; reload after a conflict.
    Cache,
}

/// Per-writer cache of the jobs it has seen: state plus version.
#[derive(Default)]
struct Cached {
    job: Job,
    version: u64,
}

struct Totals {
    latencies: Latencies,
    conflicts: u64,
    events: u64,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: AppendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.events_per_job >= 3,
        "--events-per-job must be at least 3"
    );
    anyhow::ensure!(args.jobs >= 1, "--jobs must be at least 1");
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench:{}", &Uuid::now_v7().simple().to_string()[20..]));
    let config = StoreConfig {
        prefix: prefix.clone(),
        partitions: args.partitions,
        group_commit_max: args.group_commit_max,
        group_commit_lanes: args.group_commit_lanes,
        ..StoreConfig::default()
    };
    let (store, redis): (Arc<dyn EventStore>, Option<RedisStore>) = if args.memory {
        (Arc::new(MemoryStore::new(config)), None)
    } else {
        let r = RedisStore::connect(args.redis.target()?, config).await?;
        (Arc::new(r.clone()), Some(r))
    };
    let jobs: Arc<Vec<String>> = Arc::new(
        (0..args.jobs)
            .map(|_| format!("job-{}", Uuid::now_v7()))
            .collect(),
    );
    let shared: Arc<StreamLocks<HashMap<usize, Cached>>> = Arc::new(StreamLocks::default());
    let slots: Arc<chain::Slots> = Arc::new(StreamLocks::default());
    let pad = Arc::new("p".repeat(args.payload_bytes.saturating_sub(150).max(1)));

    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (store, jobs, shared, slots, pad, args) = (
            store.clone(),
            jobs.clone(),
            shared.clone(),
            slots.clone(),
            pad.clone(),
            args.clone(),
        );
        tasks.push(tokio::spawn(async move {
            writer(w, store, jobs, (shared, slots), pad, args).await
        }));
    }
    let mut totals = Totals {
        latencies: Latencies::default(),
        conflicts: 0,
        events: 0,
    };
    for t in tasks {
        let part = t.await??;
        totals.latencies.merge(part.latencies);
        totals.conflicts += part.conflicts;
        totals.events += part.events;
    }
    let seconds = start.elapsed().as_secs_f64();
    verify(&*store, &jobs, args.events_per_job).await?;

    let eps = totals.events as f64 / seconds;
    let mut bytes_per_event = Value::Null;
    let mut ceiling_eps = Value::Null;
    let mut ratio = Value::Null;
    let mut ceiling_env = Value::Null;
    let mut group = Value::Null;
    if let Some(r) = &redis {
        let (calls, commands) = r.group_commit_stats();
        group = json!({"max": args.group_commit_max, "lanes": args.group_commit_lanes,
                       "calls": calls, "commands": commands,
                       "mean_batch": round(commands as f64 / calls.max(1) as f64, 2)});
        let bytes = r.memory_usage().await?;
        bytes_per_event = json!(round(bytes as f64 / totals.events as f64, 1));
        if !args.no_ceiling {
            let n = totals.events.min(300_000);
            let c = ceiling::measure(
                r.connection(),
                &prefix,
                n,
                args.concurrency,
                args.payload_bytes,
            )
            .await?;
            super::delete_keys(r, &format!("{prefix}:ceiling:*")).await?;
            let size = envelope_bytes(args.events_per_job, &pad);
            let c_env =
                ceiling::measure(r.connection(), &prefix, n, args.concurrency, size).await?;
            super::delete_keys(r, &format!("{prefix}:ceiling:*")).await?;
            ceiling_eps = json!(round(c, 0));
            ratio = json!(round(eps / c, 3));
            ceiling_env = json!({"envelope_bytes": size, "events_per_sec": round(c_env, 0),
                                 "ratio": round(eps / c_env, 3)});
        }
        if !args.keep {
            super::delete_keys(r, &format!("{prefix}:*")).await?;
        }
    }
    let p50 = totals.latencies.quantile_ms(0.5);
    let p99 = totals.latencies.quantile_ms(0.99);
    let mut out = Map::new();
    out.insert("events".into(), json!(totals.events));
    out.insert("seconds".into(), json!(round(seconds, 3)));
    out.insert("events_per_sec".into(), json!(round(eps, 0)));
    out.insert("p50_ms".into(), json!(round(p50, 3)));
    out.insert("p99_ms".into(), json!(round(p99, 3)));
    out.insert("conflicts".into(), json!(totals.conflicts));
    out.insert("redis_bytes_per_event".into(), bytes_per_event.clone());
    out.insert("ceiling_events_per_sec".into(), ceiling_eps.clone());
    out.insert("ratio_to_ceiling".into(), ratio.clone());
    out.insert("ceiling_at_envelope_size".into(), ceiling_env.clone());
    out.insert("group_commit".into(), group.clone());
    out.insert("chain".into(), json!(args.chain));
    out.insert(
        "load".into(),
        json!(if args.load == Load::Store {
            "store"
        } else {
            "cache"
        }),
    );
    let backend = if args.memory {
        "in-memory".to_owned()
    } else {
        args.redis.target()?.shown()
    };
    report::print(
        "jobsource bench append",
        &[
            (
                "backend",
                format!(
                    "{backend} ({} partitions, prefix {prefix})",
                    args.partitions
                ),
            ),
            (
                "workload",
                format!(
                    "{} jobs x {} events, {} writers, ~{} B payload, {}, {}",
                    args.jobs,
                    args.events_per_job,
                    args.concurrency,
                    args.payload_bytes,
                    if args.no_serialize {
                        "optimistic racing"
                    } else if args.chain {
                        "per-stream chained"
                    } else {
                        "per-stream serialized"
                    },
                    if args.load == Load::Store {
                        "load=store"
                    } else {
                        "load=cache"
                    }
                ),
            ),
            ("events", totals.events.to_string()),
            ("seconds", format!("{seconds:.3}")),
            ("events/s", format!("{eps:.0}")),
            ("p50 / p99 ms", format!("{p50:.3} / {p99:.3}")),
            ("conflicts", totals.conflicts.to_string()),
            ("redis bytes/event", bytes_per_event.to_string()),
            ("raw script ceiling/s", ceiling_eps.to_string()),
            ("ratio to ceiling", ratio.to_string()),
            ("ceiling, envelope-sized", ceiling_env.to_string()),
            ("group commit", group.to_string()),
            ("versions", "contiguous 1..E on every job (verified)".into()),
        ],
        &out,
    );
    Ok(())
}

/// Checks that every job ended with versions 1..E, contiguous.
async fn verify(store: &dyn EventStore, jobs: &[String], e: u64) -> anyhow::Result<()> {
    for stream in jobs.iter().take(2000) {
        let events = store.read_stream_all(stream).await?;
        let versions: Vec<u64> = events.iter().map(|x| x.envelope.version).collect();
        anyhow::ensure!(
            versions == (1..=e).collect::<Vec<_>>(),
            "stream {stream} has versions {versions:?}, expected 1..={e}"
        );
        anyhow::ensure!(
            events.last().map(|x| x.envelope.event_type.as_str()) == Some("job_completed"),
            "stream {stream} did not end with job_completed"
        );
    }
    Ok(())
}

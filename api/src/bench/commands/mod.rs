//! `jobsource bench commands`: `POST /v1/jobs` over HTTP with N connections.
//!
//! Phase 1 (throughput): N tasks, each with its own keep-alive connection, submit jobs in
//! a closed loop; it reports requests/s and latency percentiles. Phase 2 (visibility):
//! open-loop submits at a fixed rate (default 5 K/s); for each answered submit it measures
//! the delay until the `redis` read model has applied it (its checkpoint, which moves in
//! the same script call as the job's hash, has passed the answer's position; polled every
//! millisecond, or with `--probe exists` until `<rm>:job:<id>` exists; embedded mode polls
//! `GET /v1/jobs/{id}` instead). The server
//! is started in this process (on Redis + PostgreSQL, or embedded with `--memory`) unless
//! `--url` names a running one. The last line of the output is JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Map, Value};

use super::report::{self, round, Latencies};
use crate::serve::{ServeConfig, Server};

mod visibility;
use visibility::*;

/// Options of `bench commands`.
#[derive(Debug, Clone, Args)]
pub struct CommandsArgs {
    /// Concurrent connections (phase 1).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Submits in phase 1.
    #[arg(long, default_value_t = 50_000)]
    pub requests: u64,
    /// Run phase 1 for this many seconds instead of a fixed number of requests.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// A running server to load instead of starting one (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    pub url: Option<String>,
    /// Start the in-process server embedded (no Redis, no PostgreSQL).
    #[arg(long)]
    pub memory: bool,
    /// Redis (in-process server, and the visibility probe): one server or a cluster.
    #[command(flatten)]
    pub redis: crate::cli::RedisArgs,
    /// PostgreSQL URL of the in-process server.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// Store prefix (default: a fresh `bench-cmd-<uuid>` for the in-process server).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Read-model namespace to probe with `--url` (default: the prefix).
    #[arg(long)]
    pub read_prefix: Option<String>,
    /// Submits per second in phase 2.
    #[arg(long, default_value_t = 5000)]
    pub visibility_rate: u64,
    /// Length of phase 2 in seconds (0 skips it).
    #[arg(long, default_value_t = 5)]
    pub visibility_seconds: u64,
    /// How phase 2 sees a job in the Redis read model.
    #[arg(long, value_enum, default_value_t = Probe::Checkpoint)]
    pub probe: Probe,
    /// Keep the benchmark's keys.
    #[arg(long)]
    pub keep: bool,
}

/// How the visibility phase decides that the Redis read model shows a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Probe {
    /// One `HGETALL` of the `redis` projection's checkpoint per millisecond (cheap: one
    /// call whatever the number of pending jobs).
    Checkpoint,
    /// One pipeline of `EXISTS <rm>:job:<id>` for every pending job per millisecond.
    Exists,
}

const BODY: &str = r#"{"type":"upscale","prompt":"a lighthouse on a cliff at dusk, volumetric light, 35mm film grain, wide angle, highly detailed","parameters":{"width":1024,"height":1024,"steps":30,"guidance":7.5,"seed":42,"sampler":"dpmpp_2m","model":"sdxl-base-1.0"},"priority":50}"#;

fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// Runs the benchmark.
pub async fn run(args: CommandsArgs) -> anyhow::Result<()> {
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench-cmd-{}", uuid::Uuid::now_v7().simple()));
    let mut server = None;
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let (redis_url, redis_cluster_nodes) = if args.memory {
                (None, None)
            } else {
                args.redis.serve_settings()?
            };
            let config = ServeConfig {
                redis_url,
                redis_cluster_nodes,
                database_url: (!args.memory).then(|| args.database_url.clone()),
                prefix: prefix.clone(),
                ..ServeConfig::default()
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let s = Server::start_on(config, listener).await?;
            let base = format!("http://{}", s.addr);
            server = Some(s);
            base
        }
    };
    let mode = if args.url.is_some() {
        "external server"
    } else if args.memory {
        "in-process, embedded"
    } else {
        "in-process, redis+postgres"
    };

    // Phase 1: closed loop, N connections.
    let http = client(args.connections)?;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = args
        .seconds
        .map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let total = if deadline.is_some() {
        u64::MAX
    } else {
        args.requests
    };
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (http, next, errors, base) = (http.clone(), next.clone(), errors.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            while deadline.is_none_or(|d| Instant::now() < d)
                && next.fetch_add(1, Ordering::Relaxed) < total
            {
                let t = Instant::now();
                let res = http
                    .post(format!("{base}/v1/jobs"))
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        let _ = r.bytes().await;
                        lat.record(t.elapsed().as_micros());
                    }
                    Ok(r) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            let status = r.status();
                            eprintln!(
                                "first error: {status} {}",
                                r.text().await.unwrap_or_default()
                            );
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first error: {e}");
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Latencies::default();
    for t in tasks {
        lat.merge(t.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent = next.load(Ordering::Relaxed).min(total);
    let ok = sent - errors.load(Ordering::Relaxed).min(sent);
    let rps = ok as f64 / seconds;
    let (p50, p99) = (lat.quantile_ms(0.50), lat.quantile_ms(0.99));

    // Phase 2: open loop at a fixed rate, visibility in the read model.
    let rm = jobsource_projections::redis::read_namespace(
        args.read_prefix.as_deref(),
        &prefix,
        args.redis.is_cluster(),
    )
    .map_err(anyhow::Error::msg)?;
    let probe_redis = !(args.memory && args.url.is_none());
    let mut vis = if args.visibility_seconds == 0 {
        Visibility::default()
    } else {
        visibility(&args, &base, &rm, probe_redis).await?
    };
    let (v50, v99) = (vis.lat.quantile_ms(0.50), vis.lat.quantile_ms(0.99));

    if let Some(s) = server.take() {
        s.shutdown().await;
    }
    if !args.keep && args.url.is_none() && !args.memory {
        let store = jobsource_eventstore::RedisStore::connect(
            args.redis.target()?,
            jobsource_eventstore::StoreConfig {
                prefix: prefix.clone(),
                ..jobsource_eventstore::StoreConfig::default()
            },
        )
        .await?;
        super::delete_keys(&store, &format!("{prefix}:*")).await?;
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rows = vec![
        ("mode", mode.to_owned()),
        ("cores", cores.to_string()),
        ("connections", args.connections.to_string()),
        ("requests", ok.to_string()),
        ("errors", errors.load(Ordering::Relaxed).to_string()),
        ("seconds", format!("{seconds:.3}")),
        ("requests/s", format!("{rps:.0}")),
        ("p50 ms", format!("{p50:.3}")),
        ("p99 ms", format!("{p99:.3}")),
        (
            "visibility probe",
            if !probe_redis {
                "GET /v1/jobs/{id} every 1 ms (no Redis)".to_owned()
            } else if args.probe == Probe::Exists {
                format!("EXISTS {rm}:job:<id> every 1 ms")
            } else {
                format!("{rm}:projection:redis:checkpoint every 1 ms")
            },
        ),
        ("visibility rate /s", args.visibility_rate.to_string()),
        ("visibility submits/s reached", format!("{:.0}", vis.rate)),
        ("visibility submit errors", vis.submit_errors.to_string()),
        ("visibility samples", vis.samples.to_string()),
        ("visibility misses (>2 s)", vis.misses.to_string()),
        ("visibility p50 ms", format!("{v50:.3}")),
        ("visibility p99 ms", format!("{v99:.3}")),
    ];
    let mut out = Map::new();
    out.insert("requests".into(), json!(ok));
    out.insert("seconds".into(), json!(round(seconds, 3)));
    out.insert("requests_per_sec".into(), json!(rps.round()));
    out.insert("p50_ms".into(), json!(round(p50, 3)));
    out.insert("p99_ms".into(), json!(round(p99, 3)));
    out.insert("errors".into(), json!(errors.load(Ordering::Relaxed)));
    out.insert("connections".into(), json!(args.connections));
    out.insert("visibility_rate".into(), json!(args.visibility_rate));
    let probe = match (probe_redis, args.probe) {
        (false, _) => "http_get",
        (true, Probe::Exists) => "exists",
        (true, Probe::Checkpoint) => "checkpoint",
    };
    out.insert("visibility_probe".into(), json!(probe));
    out.insert("visibility_rate_reached".into(), json!(vis.rate.round()));
    out.insert("visibility_submit_errors".into(), json!(vis.submit_errors));
    out.insert("visibility_samples".into(), json!(vis.samples));
    out.insert("visibility_misses".into(), json!(vis.misses));
    out.insert("visibility_p50_ms".into(), json!(round(v50, 3)));
    out.insert("visibility_p99_ms".into(), json!(round(v99, 3)));
    report::print("jobsource bench commands", &rows, &out);
    Ok(())
}

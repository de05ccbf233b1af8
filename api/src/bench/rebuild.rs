//! `jobsource bench rebuild`: rebuild a projection over a store filled by `bench append
//! --keep`, beside the rate of just reading the log through the store and the PostgreSQL
//! COPY ceiling for the same number of rows, both measured in the same run.

use std::time::Instant;

use clap::Args;
use futures::StreamExt;
use jobsource_eventstore::{EventStore, LogId, RedisStore};
use jobsource_projections::rebuild::PARALLEL_PARTITIONS;
use jobsource_projections::{migrate, rebuild, PostgresReadModel};
use serde_json::{json, Map};
use sqlx::postgres::PgPoolOptions;

use super::report::{self, round};
use crate::cli::StoreArgs;

/// Options of `bench rebuild`.
#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    /// `postgres` or `redis`.
    #[arg(long)]
    pub projection: String,
    #[allow(missing_docs)] // flattened: each argument has its own help
    #[command(flatten)]
    pub store: StoreArgs,
    /// PostgreSQL server; the bench creates and drops its own database on it.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    match base[host_start..].find('/') {
        Some(i) => format!("{}/{db}{query}", &base[..host_start + i]),
        None => format!("{base}/{db}{query}"),
    }
}

/// Runs the benchmark.
pub async fn run(args: RebuildArgs) -> anyhow::Result<()> {
    let store = args.store.connect().await?;
    let mut events = 0;
    for p in 0..store.partitions() {
        events += store.partition_len(p).await?;
    }
    anyhow::ensure!(
        events > 0,
        "store {} is empty: fill it first with `jobsource bench append --keep --prefix {}`",
        args.store.prefix,
        args.store.prefix
    );
    let mut out = Map::new();
    let mut rows = vec![("events in the log", events.to_string())];
    // The read ceiling, in the same run: the whole log read (and decoded) through the
    // store, one partition after another and as many partitions at once as the rebuilds
    // drain; the rebuild is compared with the faster of the two.
    let sequential = read_ceiling(&store, args.batch, 1).await?;
    let parallel = read_ceiling(&store, args.batch, PARALLEL_PARTITIONS).await?;
    let read_rate = sequential.max(parallel);
    let (seconds, copy_rate) = match args.projection.as_str() {
        "redis" => {
            // A scratch namespace, hash-tagged on a cluster like any read model's.
            let rm = jobsource_projections::redis::read_namespace(
                None,
                &format!(
                    "{}:benchrm:{}",
                    args.store.prefix,
                    uuid::Uuid::now_v7().simple()
                ),
                store.is_cluster(),
            )
            .map_err(anyhow::Error::msg)?;
            // The real rebuild path: a shadow generation built from the log, then swapped in.
            let noop = |_: u64, _: u64| {};
            let start = Instant::now();
            jobsource_projections::redis::rebuild::rebuild(
                &store,
                store.connection(),
                &rm,
                None,
                args.batch,
                &noop,
            )
            .await?;
            let secs = start.elapsed().as_secs_f64();
            super::delete_keys(&store, &format!("{rm}:*")).await?;
            (secs, None)
        }
        "postgres" => {
            let admin = args
                .database_url
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--database-url / DATABASE_URL is required"))?;
            let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
            let admin_pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&admin)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin_pool)
                .await?;
            let pool = PgPoolOptions::new()
                .max_connections(PARALLEL_PARTITIONS as u32 + 1)
                .connect(&with_database(&admin, &name))
                .await?;
            migrate::migrate(&pool).await?;
            let noop = |_: u64, _: u64| {};
            let start = Instant::now();
            rebuild::rebuild(&store, &pool, &PostgresReadModel, None, args.batch, &noop).await?;
            let secs = start.elapsed().as_secs_f64();
            let copy = copy_ceiling(&pool, events).await?;
            pool.close().await;
            sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&admin_pool)
                .await?;
            (secs, Some(copy))
        }
        other => anyhow::bail!("unknown projection {other:?}: expected postgres or redis"),
    };
    let eps = events as f64 / seconds;
    out.insert("events".into(), json!(events));
    out.insert("seconds".into(), json!(round(seconds, 3)));
    out.insert("events_per_sec".into(), json!(round(eps, 0)));
    rows.push(("projection", args.projection.clone()));
    rows.push(("seconds", format!("{seconds:.3}")));
    rows.push(("events/s", format!("{eps:.0}")));
    out.insert(
        "read_ceiling".into(),
        json!({"sequential_events_per_sec": round(sequential, 0),
               "parallel_events_per_sec": round(parallel, 0),
               "parallel_partitions": PARALLEL_PARTITIONS}),
    );
    out.insert("ratio_to_read".into(), json!(round(eps / read_rate, 3)));
    rows.push((
        "read ceiling ev/s (same run)",
        format!("{sequential:.0} sequential, {parallel:.0} with {PARALLEL_PARTITIONS} partitions at once"),
    ));
    rows.push(("ratio to read ceiling", format!("{:.3}", eps / read_rate)));
    if let Some(c) = copy_rate {
        out.insert("copy_rows_per_sec".into(), json!(round(c, 0)));
        rows.push(("COPY ceiling rows/s (same run)", format!("{c:.0}")));
    }
    report::print("jobsource bench rebuild", &rows, &out);
    Ok(())
}

/// Events per second of reading the whole log through the store, `batch` events per
/// read, `parallel` partitions at once.
async fn read_ceiling(store: &RedisStore, batch: usize, parallel: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let counts: Vec<anyhow::Result<u64>> = futures::stream::iter(0..store.partitions())
        .map(|p| async move {
            let mut after = LogId::ZERO;
            let mut n = 0u64;
            loop {
                let events = store.read_partition(p, after, batch).await?;
                n += events.len() as u64;
                match events.last() {
                    Some(last) if events.len() == batch => after = last.position.id,
                    _ => return Ok(n),
                }
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let total = counts.into_iter().sum::<anyhow::Result<u64>>()?;
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// COPY of `n` job-shaped rows into a scratch table: the PostgreSQL ceiling.
async fn copy_ceiling(pool: &sqlx::PgPool, n: u64) -> anyhow::Result<f64> {
    let mut conn = pool.acquire().await?;
    sqlx::query("CREATE TEMP TABLE copy_bench (LIKE jobs INCLUDING DEFAULTS)")
        .execute(&mut *conn)
        .await?;
    let mut data = String::new();
    for i in 0..n {
        data.push_str(&format!(
            "{}\trender\tcompleted\t50\t100\t\\N\tprompt {i}\t{{}}\t\\N\t\\N\t\\N\t\\N\t{{}}\t3\t1\t0\tw\tm\t{{\"ok\":true}}\t\\N\t2026-11-22T10:00:00Z\t2026-11-22T10:00:00Z\t\\N\t\\N\t{i}\t0@{i}-0\n",
            uuid::Uuid::now_v7()
        ));
    }
    let start = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY copy_bench FROM STDIN (FORMAT text)")
        .await?;
    copy.send(data.as_bytes()).await?;
    copy.finish().await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::with_database;

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
}

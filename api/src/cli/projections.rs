//! `jobsource projections ...`: status and resume of every consumer (through the same
//! registry `serve` runs), catch-up, rebuild and verify of the projections.

use std::sync::Arc;

use clap::{Args, Subcommand};
use jobsource_eventstore::EventStore;
use jobsource_projections::worker::WorkerConfig;
use jobsource_projections::RedisReadModel;

use jobsource_app::consumers::{Consumers, DurableParts, Leasing};
use jobsource_app::service::Service;
use jobsource_projections::subscriber::lease::RedisLeaseStore;

use super::StoreArgs;

/// `jobsource projections` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Checkpoint, lag, state and last error per consumer and partition.
    Status(DbArgs),
    /// Apply every event after the checkpoints once, then exit (any consumer).
    CatchUp {
        /// Consumer name (`archive`, `postgres`, `redis`, `webhooks`, `orchestrator`, ...).
        name: String,
        #[allow(missing_docs)] // flattened: each argument has its own help
        #[command(flatten)]
        db: DbArgs,
    },
    /// Rebuild beside the live model, catch up while appends continue, swap atomically.
    /// Resumes an unfinished rebuild unless `--from` is given.
    Rebuild {
        /// Projection name (`archive`, `postgres`, `redis`).
        name: String,
        /// Start the rebuild from this offset (`start`, a time, `p@ms-seq,...`).
        #[arg(long)]
        from: Option<String>,
        #[allow(missing_docs)] // flattened: each argument has its own help
        #[command(flatten)]
        db: DbArgs,
    },
    /// Recompute the model from the log up to the live checkpoints and diff it against the
    /// live one; exits non-zero with the first differences.
    Verify {
        /// Projection name (`archive`, `postgres`, `redis`).
        name: String,
        #[allow(missing_docs)] // flattened: each argument has its own help
        #[command(flatten)]
        db: DbArgs,
    },
    /// Clear the stalls of a consumer after their cause is fixed; a running `serve` picks
    /// it up within about a second.
    Resume {
        /// Consumer name (`archive`, `postgres`, `redis`, `webhooks`, `orchestrator`,
        /// `seed_bus`).
        name: String,
        #[allow(missing_docs)] // flattened: each argument has its own help
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Store and database locations.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// PostgreSQL URL of the read models (not needed for `redis`).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Namespace of the Redis read model (default: the prefix; empty: bare seed keys).
    #[arg(long, env = "JOBSOURCE_READ_PREFIX")]
    read_prefix: Option<String>,
    /// Include the seed message bus bridge (`seed_bus`) in status and resume.
    #[arg(long, env = "JOBSOURCE_SEED_BUS", default_value_t = false,
        action = clap::ArgAction::Set)]
    seed_bus: bool,
}

impl DbArgs {
    /// A lookup error, with a hint when the PostgreSQL consumers are missing because no
    /// database was given.
    fn unknown(&self, e: jobsource_app::service::ServiceError) -> anyhow::Error {
        match self.database_url.as_deref().filter(|u| !u.is_empty()) {
            Some(_) => anyhow::anyhow!("{e}"),
            None => anyhow::anyhow!(
                "{e} (archive, postgres and webhooks need DATABASE_URL or --database-url)"
            ),
        }
    }

    fn read_prefix(&self) -> anyhow::Result<String> {
        jobsource_projections::redis::read_namespace(
            self.read_prefix.as_deref(),
            &self.store.prefix,
            self.store.redis.is_cluster(),
        )
        .map_err(anyhow::Error::msg)
    }
}

/// The registry of the durable deployment's consumers, as `serve` builds it.
async fn registry(db: &DbArgs) -> anyhow::Result<Consumers> {
    let store = db.store.connect().await?;
    let conn = store.connection();
    let conn_for_leases = conn.clone();
    let store: Arc<dyn EventStore> = Arc::new(store);
    // Without DATABASE_URL only the Redis-side consumers are there (enough for `redis`).
    let pool = match db.database_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let pool = pool(url).await?;
            jobsource_projections::migrate::migrate(&pool).await?;
            Some(pool)
        }
        None => None,
    };
    let model = Arc::new(RedisReadModel::new(conn.clone(), &db.read_prefix()?));
    let seed_bus = db.seed_bus.then(|| {
        Arc::new(jobsource_app::seed_bus::SeedBus::new(
            store.clone(),
            conn.clone(),
            &db.store.prefix,
            jobsource_app::seed_bus::SeedBusConfig::default(),
        ))
    });
    Ok(Consumers::durable(DurableParts {
        store: store.clone(),
        conn,
        prefix: db.store.prefix.clone(),
        pool,
        model,
        service: Arc::new(Service::new(store, None)),
        worker: WorkerConfig::default(),
        seed_bus,
        // Never refreshed here: only to read who holds each partition.
        leases: Some(Leasing {
            store: Arc::new(RedisLeaseStore::new(conn_for_leases, &db.store.prefix)),
            instance: format!("cli-{}", std::process::id()),
            ttl: std::time::Duration::from_secs(10),
        }),
    }))
}

fn bar(name: &str) -> anyhow::Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(format!("rebuild {name}"));
    Ok(bar)
}

async fn pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to {}: {e}",
                jobsource_eventstore::redis::redact_url(url)
            )
        })
}

/// Runs the command.
pub async fn run(command: ProjectionsCommand) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Status(db) => {
            let registry = registry(&db).await?;
            let rows = registry.status(10_000).await;
            println!(
                "{:<12} {:>4} {:<26} {:>7} {:<9} last error",
                "consumer", "part", "checkpoint", "lag", "state"
            );
            for r in rows {
                let lag = if r.lag >= 10_000 {
                    ">=10000".to_owned()
                } else {
                    r.lag.to_string()
                };
                println!(
                    "{:<12} {:>4} {:<26} {:>7} {:<9} {}",
                    r.projection,
                    r.partition,
                    r.checkpoint,
                    lag,
                    r.state,
                    r.last_error.unwrap_or_default()
                );
            }
            for (name, owns) in registry.owned() {
                println!("{name} owns {owns}");
            }
            Ok(())
        }
        ProjectionsCommand::CatchUp { name, db } => {
            let registry = registry(&db).await?;
            let consumer = registry.named(&name).map_err(|e| db.unknown(e))?;
            let start = std::time::Instant::now();
            let n = consumer.catch_up().await?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{name}: {n} events applied in {secs:.2} s ({:.0} events/s)",
                n as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        ProjectionsCommand::Rebuild { name, from, db } => {
            let registry = registry(&db).await?;
            let rebuilder = registry.rebuilder(&name).map_err(|e| db.unknown(e))?;
            let store = db.store.connect().await?;
            let from = match from {
                Some(f) => Some(EventStore::resolve(&store, &f.parse()?).await?),
                None => None,
            };
            let bar = bar(&name)?;
            let progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let start = std::time::Instant::now();
            let n = rebuilder.rebuild(from, 1000, &progress).await?;
            bar.finish();
            println!(
                "{name}: rebuilt from {n} events and swapped in ({:.0} events/s)",
                jobsource_projections::rebuild::rate(n, start)
            );
            Ok(())
        }
        ProjectionsCommand::Verify { name, db } => {
            let registry = registry(&db).await?;
            let diffs = registry
                .rebuilder(&name)
                .map_err(|e| db.unknown(e))?
                .verify(1000, 20)
                .await?;
            if diffs.is_empty() {
                println!("{name}: live model equals the log's recomputation");
                return Ok(());
            }
            for d in &diffs {
                println!("{} {}: {}", d.table, d.kind, d.row);
            }
            anyhow::bail!("{name}: {} difference(s) (first shown)", diffs.len())
        }
        ProjectionsCommand::Resume { name, db } => {
            let registry = registry(&db).await?;
            registry.named(&name).map_err(|e| db.unknown(e))?;
            let n = registry.resume(&name).await?;
            println!("{name}: {n} stalled partition(s) resumed");
            Ok(())
        }
    }
}

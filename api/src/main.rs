//! The `jobsource` binary: command-line entry point.

use clap::{Parser, Subcommand};
use jobsource_api::{bench, cli};

// mimalloc: the event path allocates many small buffers (envelopes, JSON); glibc malloc
// spent a quarter of the in-memory append profile in malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jobsource: an event-sourced job and workflow core.
#[derive(Debug, Parser)]
#[command(name = "jobsource", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, the projectors and the orchestrator (embedded when REDIS_URL is unset).
    Serve(cli::serve::ServeArgs),
    /// Apply the PostgreSQL migrations (read models, archive, checkpoints).
    Migrate {
        /// PostgreSQL URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Projection status and control.
    Projections {
        #[command(subcommand)]
        which: cli::projections::ProjectionsCommand,
    },
    /// Print events from the log (filters, offsets, follow, JSON lines).
    Events(cli::events::EventsArgs),
    /// Benchmarks; each prints a table and, as its last line, JSON.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Concurrent job lifecycles appended through the EventStore API.
    Append(bench::append::AppendArgs),
    /// POST /v1/jobs load over HTTP: requests/s, latency and read-model visibility.
    Commands(bench::commands::CommandsArgs),
    /// Job lifecycles over HTTP (submit, claim, progress, complete): jobs/s, latency, exactly-once.
    Lifecycle(bench::lifecycle::LifecycleArgs),
    /// Rebuild a projection over a store filled by `bench append --keep`.
    Rebuild(bench::rebuild::RebuildArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("JOBSOURCE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let server = jobsource_api::serve::Server::start(args.config()).await?;
            server.run_until_signal().await;
            Ok(())
        }
        Command::Migrate { database_url } => {
            jobsource_projections::migrate::migrate_url(&database_url)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "migrating {}: {e}",
                        jobsource_eventstore::redis::redact_url(&database_url)
                    )
                })?;
            let known = jobsource_projections::migrate::MIGRATOR.iter().count();
            println!("migrations up to date ({known} known)");
            Ok(())
        }
        Command::Projections { which } => cli::projections::run(which).await,
        Command::Events(args) => cli::events::run(args).await,
        Command::Bench { which } => match which {
            BenchCommand::Append(args) => bench::append::run(args).await,
            BenchCommand::Rebuild(args) => bench::rebuild::run(args).await,
            BenchCommand::Commands(args) => bench::commands::run(args).await,
            BenchCommand::Lifecycle(args) => bench::lifecycle::run(args).await,
        },
    }
}

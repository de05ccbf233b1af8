//! Subcommands of the `jobsource` binary other than the benchmarks.

pub mod events;
pub mod projections;
pub mod serve;

use clap::Args;
use jobsource_eventstore::{RedisStore, StoreConfig};

/// Where the event store is (shared by the subcommands that read it).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Redis URL of the event store.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Key prefix of the store.
    #[arg(long, env = "JOBSOURCE_PREFIX", default_value = "jobsource")]
    pub prefix: String,
    /// Partition count (must match the one recorded in the store).
    #[arg(long, env = "JOBSOURCE_PARTITIONS", default_value_t = 16)]
    pub partitions: u32,
}

impl StoreArgs {
    /// Connects to the Redis event store.
    pub async fn connect(&self) -> anyhow::Result<RedisStore> {
        Ok(RedisStore::connect(
            &self.redis_url,
            StoreConfig {
                prefix: self.prefix.clone(),
                partitions: self.partitions,
                ..StoreConfig::default()
            },
        )
        .await?)
    }
}

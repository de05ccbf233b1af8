//! Subcommands of the `jobsource` binary other than the benchmarks.

pub mod events;
pub mod projections;
pub mod serve;

use clap::Args;
use jobsource_eventstore::redis::RedisTarget;
use jobsource_eventstore::{RedisStore, StoreConfig};

/// The Redis URL used when neither `REDIS_URL` nor the cluster nodes are set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Which Redis: one server or a cluster (shared by every subcommand that talks to Redis).
#[derive(Debug, Clone, Default, Args)]
pub struct RedisArgs {
    /// Redis URL of the event store (default redis://127.0.0.1:6379).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (redis://h1:p1,redis://h2:p2,...);
    /// instead of REDIS_URL.
    #[arg(long, env = "JOBSOURCE_REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,
}

impl RedisArgs {
    /// The target these settings name (both set is an error naming them).
    pub fn target(&self) -> anyhow::Result<RedisTarget> {
        Ok(RedisTarget::from_settings(
            self.redis_url.as_deref(),
            self.redis_cluster_nodes.as_deref(),
            DEFAULT_REDIS_URL,
        )?)
    }

    /// The two `serve` settings (`redis_url`, `redis_cluster_nodes`) for this target.
    pub fn serve_settings(&self) -> anyhow::Result<(Option<String>, Option<String>)> {
        Ok(match self.target()? {
            RedisTarget::Single(url) => (Some(url), None),
            RedisTarget::Cluster(nodes) => (None, Some(nodes.join(","))),
        })
    }

    /// Whether a cluster is named.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target(), Ok(RedisTarget::Cluster(_)))
    }
}

/// Where the event store is (shared by the subcommands that read it).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    #[allow(missing_docs)] // flattened: each argument has its own help
    #[command(flatten)]
    pub redis: RedisArgs,
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
            self.redis.target()?,
            StoreConfig {
                prefix: self.prefix.clone(),
                partitions: self.partitions,
                ..StoreConfig::default()
            },
        )
        .await?)
    }
}

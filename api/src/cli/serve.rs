//! `jobsource serve` arguments (flags or environment, SPEC section 7).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::serve::ServeConfig;
use jobsource_http::HttpConfig;

/// Configuration of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Listen address.
    #[arg(long, env = "JOBSOURCE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Redis URL of the event store; without it, embedded mode (nothing persists).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (redis://h1:p1,redis://h2:p2,...):
    /// the durable deployment on a cluster, instead of REDIS_URL.
    #[arg(long, env = "JOBSOURCE_REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,
    /// PostgreSQL URL (read models, archive); required with REDIS_URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Key prefix of the event store.
    #[arg(long, env = "JOBSOURCE_PREFIX", default_value = "jobsource")]
    pub prefix: String,
    /// Partition count (fixed when the store is first used).
    #[arg(long, env = "JOBSOURCE_PARTITIONS", default_value_t = 16)]
    pub partitions: u32,
    /// Group commit: most append commands of one partition sent in one Redis script call
    /// (1: each command alone).
    #[arg(long, env = "JOBSOURCE_GROUP_COMMIT_MAX", default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub group_commit_max: u64,
    /// Group commit on one Redis server: lanes the partitions share, each with one script
    /// call in flight carrying commands of all its partitions (ignored on a cluster).
    #[arg(long, env = "JOBSOURCE_GROUP_COMMIT_LANES", default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub group_commit_lanes: u32,
    /// Namespace of the Redis read model (default: the prefix; empty: the seed's bare keys).
    #[arg(long, env = "JOBSOURCE_READ_PREFIX")]
    pub read_prefix: Option<String>,
    /// Comma-separated API keys; when set, /v1 and /api need one.
    #[arg(long, env = "JOBSOURCE_API_KEYS", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// Job-type catalog (TOML, see job-types.example.toml).
    #[arg(long, env = "JOBSOURCE_JOB_TYPES_FILE")]
    pub job_types_file: Option<PathBuf>,
    /// Request body limit in bytes.
    #[arg(long, env = "JOBSOURCE_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Secret of the webhook signatures (`X-Jobsource-Signature`); unsigned when unset.
    #[arg(long, env = "JOBSOURCE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Attempts of a webhook delivery before it is dead-lettered.
    #[arg(long, env = "JOBSOURCE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 6,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_max_attempts: u32,
    /// Timeout of one webhook request, in milliseconds.
    #[arg(long, env = "JOBSOURCE_WEBHOOK_TIMEOUT_MS", default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout_ms: u64,
    /// Seconds without a heartbeat after which a machine is marked offline.
    #[arg(long, env = "JOBSOURCE_MACHINE_TIMEOUT_SECS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub machine_timeout_secs: u64,
    /// Lease of a job assignment that asks for none (seconds, 1..=86400).
    #[arg(long, env = "JOBSOURCE_JOB_LEASE_SECS", default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub job_lease_secs: u64,
    /// Backoff before a job's first retry (ms; doubles per retry, capped at 5 min, jittered).
    #[arg(long, env = "JOBSOURCE_RETRY_BACKOFF_MS", default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(0..=300_000))]
    pub retry_backoff_ms: u64,
    /// Republish every event on the seed's Redis pub/sub channels and streams (full mode).
    #[arg(long, env = "JOBSOURCE_SEED_BUS", default_value_t = false,
        action = clap::ArgAction::Set)]
    pub seed_bus: bool,
    /// Approximate length cap (`MAXLEN ~`) of each seed bus `stream:<type>`.
    #[arg(long, env = "JOBSOURCE_SEED_BUS_MAXLEN",
        default_value_t = jobsource_app::seed_bus::DEFAULT_MAXLEN,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub seed_bus_maxlen: u64,
    /// Refuse webhook targets on loopback, private and link-local addresses (at submit:
    /// 422; at send: such addresses are never connected to).
    #[arg(long, env = "JOBSOURCE_WEBHOOK_DENY_PRIVATE", default_value_t = false,
        action = clap::ArgAction::Set)]
    pub webhook_deny_private: bool,
    /// This instance's id among those sharing one store (default: host name and pid).
    #[arg(long, env = "JOBSOURCE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Partition lease length in ms: a dead instance's partitions are taken over after it.
    #[arg(long, env = "JOBSOURCE_LEASE_TTL_MS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    pub lease_ttl_ms: u64,
}

impl ServeArgs {
    /// The server configuration (empty strings count as unset).
    pub fn config(self) -> ServeConfig {
        let non_empty = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
        ServeConfig {
            listen: self.listen,
            redis_url: non_empty(self.redis_url),
            redis_cluster_nodes: non_empty(self.redis_cluster_nodes),
            database_url: non_empty(self.database_url),
            prefix: self.prefix,
            partitions: self.partitions,
            group_commit_max: self.group_commit_max as usize,
            group_commit_lanes: self.group_commit_lanes,
            read_prefix: self.read_prefix,
            job_types_file: self.job_types_file.filter(|p| !p.as_os_str().is_empty()),
            http: HttpConfig {
                api_keys: self
                    .api_keys
                    .into_iter()
                    .map(|k| k.trim().to_owned())
                    .filter(|k| !k.is_empty())
                    .collect(),
                body_limit: self.body_limit,
                ..HttpConfig::default()
            },
            webhooks: jobsource_app::webhooks::WebhookConfig {
                secret: non_empty(self.webhook_secret),
                max_attempts: self.webhook_max_attempts,
                timeout: std::time::Duration::from_millis(self.webhook_timeout_ms),
                deny_private: self.webhook_deny_private,
                ..jobsource_app::webhooks::WebhookConfig::default()
            },
            machine_timeout: std::time::Duration::from_secs(self.machine_timeout_secs),
            queue: jobsource_app::service::queue::QueueConfig {
                default_lease: std::time::Duration::from_secs(self.job_lease_secs),
                retry_backoff: std::time::Duration::from_millis(self.retry_backoff_ms),
            },
            seed_bus: self.seed_bus,
            seed_bus_maxlen: self.seed_bus_maxlen,
            instance_id: non_empty(self.instance_id)
                .unwrap_or_else(crate::serve::default_instance_id),
            lease_ttl: std::time::Duration::from_millis(self.lease_ttl_ms),
            ..ServeConfig::default()
        }
    }
}

//! What `serve` is configured with, and why starting it can fail.

use super::*;

/// Everything `serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Redis URL; `None` (and no cluster nodes) = embedded mode.
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (`JOBSOURCE_REDIS_CLUSTER_NODES`).
    pub redis_cluster_nodes: Option<String>,
    /// PostgreSQL URL (required in full mode).
    pub database_url: Option<String>,
    /// Event store key prefix.
    pub prefix: String,
    /// Partition count.
    pub partitions: u32,
    /// Group commit: most append commands of one partition per Redis script call
    /// (`JOBSOURCE_GROUP_COMMIT_MAX`, default 64; 1 sends each command alone).
    pub group_commit_max: usize,
    /// Group commit lanes on one Redis server (`JOBSOURCE_GROUP_COMMIT_LANES`, default 4).
    pub group_commit_lanes: u32,
    /// Read-model namespace (`None` = the prefix; empty = the seed's bare keys).
    pub read_prefix: Option<String>,
    /// Job-type catalog file.
    pub job_types_file: Option<PathBuf>,
    /// HTTP settings.
    pub http: HttpConfig,
    /// Projection worker settings.
    pub worker: WorkerConfig,
    /// WebSocket limits: events a client may fall behind before it is closed, ping
    /// interval, pong timeout.
    pub live: jobsource_app::live::LiveConfig,
    /// Webhook sender settings (secret, attempts, timeout, backoff).
    pub webhooks: jobsource_app::webhooks::WebhookConfig,
    /// A machine not seen for this long is marked offline (default 60 s).
    pub machine_timeout: Duration,
    /// Job queue settings (default lease, retry backoff).
    pub queue: jobsource_app::service::queue::QueueConfig,
    /// How often the lease timers are swept.
    pub lease_sweep: Duration,
    /// Run the seed message bus bridge (`JOBSOURCE_SEED_BUS`; full mode only).
    pub seed_bus: bool,
    /// `MAXLEN ~` of the bridge's `stream:<type>` streams (`JOBSOURCE_SEED_BUS_MAXLEN`).
    pub seed_bus_maxlen: u64,
    /// This instance's id among those sharing the store (`JOBSOURCE_INSTANCE_ID`).
    pub instance_id: String,
    /// Partition lease length (`JOBSOURCE_LEASE_TTL_MS`, default 10 s); renewed every
    /// third of it.
    pub lease_ttl: Duration,
}

/// The default instance id: the host name and the process id.
pub fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "jobsource".into());
    format!("{host}-{}", std::process::id())
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_url: None,
            redis_cluster_nodes: None,
            database_url: None,
            prefix: "jobsource".into(),
            partitions: 16,
            group_commit_max: 64,
            group_commit_lanes: jobsource_eventstore::append::DEFAULT_GROUP_COMMIT_LANES,
            read_prefix: None,
            job_types_file: None,
            http: HttpConfig::default(),
            live: jobsource_app::live::LiveConfig::default(),
            worker: WorkerConfig {
                batch: 500,
                max_attempts: 5,
                backoff: Duration::from_millis(100),
            },
            webhooks: jobsource_app::webhooks::WebhookConfig::default(),
            machine_timeout: jobsource_app::service::machines::sweeper::DEFAULT_TIMEOUT,
            queue: jobsource_app::service::queue::QueueConfig::default(),
            lease_sweep: Duration::from_millis(250),
            seed_bus: false,
            seed_bus_maxlen: jobsource_app::seed_bus::DEFAULT_MAXLEN,
            instance_id: default_instance_id(),
            lease_ttl: Duration::from_millis(10_000),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The event store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// PostgreSQL or a projection.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The job-type catalog.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// The listen socket.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

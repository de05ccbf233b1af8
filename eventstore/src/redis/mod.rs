//! Redis Streams backend (SPEC section 4).
//!
//! - Appends run one Lua script (`append.lua`) that checks the authoritative version
//!   counter, writes the events to the partition log and the stream's history list and
//!   records the idempotency key, atomically.
//! - Commands share one auto-reconnecting multiplexed connection ([`RedisConn`]: a single
//!   server or a Redis Cluster), so concurrent appends pipeline on one socket; blocking
//!   tail reads get dedicated connections.
//! - Every script's keys share one slot (the partition's `{p<N>}` tag), so the same
//!   scripts run on a cluster.
//! - At connect the partition count is checked against `<prefix>:meta` and `appendonly` is
//!   read, with a warning when AOF is off.

mod conn;
mod keys;
mod queue;
mod tail;
mod target;

use async_trait::async_trait;
use redis::{AsyncCommands, Script, Value};

pub use conn::RedisConn;
pub use keys::Keys;
use target::Connector;
pub use target::{RedisTarget, CLUSTER_NODES_ENV};

use crate::append::{AppendRequest, AppendResult, ExpectedVersion, Idempotency, StoreConfig};
use crate::codec;
use crate::envelope::RecordedEvent;
use crate::error::{DecodeError, StoreError};
use crate::partition::partition_of;
use crate::position::{Cursor, LogId, Position};
use crate::store::{EventStore, EventStream};

mod entries;
mod group;
mod store;
use entries::*;

const APPEND_LUA: &str = include_str!("append.lua");
const READ_STREAM_LUA: &str = include_str!("read_stream.lua");
/// Layout version recorded in `<prefix>:meta`, so a future layout change can be detected.
/// 3: the queue index (`q:*` keys) kept by the append; a layout-2 store's pending jobs are
/// not in it, so such a store is refused rather than silently never claimed.
const LAYOUT: &str = "3";

/// Whether the Redis server persists with AOF (checked at connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aof {
    /// `appendonly yes`.
    On,
    /// `appendonly no`: a warning is logged at connect.
    Off,
    /// `CONFIG GET` refused (e.g. managed Redis); the reason.
    Unknown(String),
}

/// The Redis event store.
#[derive(Clone)]
pub struct RedisStore {
    connector: Connector,
    conn: RedisConn,
    keys: Keys,
    config: StoreConfig,
    url: String,
    append_script: Script,
    read_script: Script,
    claim_script: Script,
    lease_script: Script,
    groups: std::sync::Arc<group::Groups>,
}

fn conf_get_appendonly() -> redis::Cmd {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("appendonly");
    cmd
}

/// Removes credentials from a Redis URL so it can appear in errors and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl RedisStore {
    /// Connects to one server (a URL) or a cluster ([`RedisTarget::Cluster`]), checks (or
    /// records) the partition count, and checks AOF.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        config: StoreConfig,
    ) -> Result<RedisStore, StoreError> {
        let target = target.into();
        let shown = target.shown();
        let (connector, conn) = target::connect(&target).await?;
        // On a cluster every call must stay in one slot, so each partition has its own
        // lane; one server takes commands of several partitions in one call.
        let lanes = if conn.is_cluster() {
            config.partitions
        } else {
            config.group_commit_lanes.clamp(1, config.partitions.max(1))
        };
        let groups = std::sync::Arc::new(group::Groups::new(lanes, config.group_commit_max));
        let store = RedisStore {
            connector,
            conn,
            keys: Keys::new(&config.prefix),
            config,
            url: shown,
            append_script: Script::new(APPEND_LUA),
            read_script: Script::new(READ_STREAM_LUA),
            claim_script: Script::new(queue::CLAIM_LUA),
            lease_script: Script::new(queue::LEASE_LUA),
            groups,
        };
        store.check_partitions().await?;
        store.check_aof().await;
        Ok(store)
    }

    fn partitions_count(&self) -> u32 {
        self.config.partitions
    }

    /// The key layout in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The (redacted) URL this store talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A clone of the shared multiplexed connection.
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Whether the store runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// A new connection of its own, for blocking reads that may block up to `block`.
    pub async fn dedicated_connection(
        &self,
        block: std::time::Duration,
    ) -> Result<RedisConn, StoreError> {
        self.connector
            .dedicated(block)
            .await
            .map_err(|e| self.map_err(e))
    }

    pub(crate) fn map_err(&self, e: redis::RedisError) -> StoreError {
        map_redis_error(&self.url, e)
    }

    async fn check_partitions(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let meta = self.keys.meta();
        // HSETNX makes the first user of a prefix record P; everyone later must agree.
        let _: bool = conn
            .hset_nx(&meta, "partitions", self.config.partitions)
            .await
            .map_err(|e| self.map_err(e))?;
        let _: bool = conn
            .hset_nx(&meta, "layout", LAYOUT)
            .await
            .map_err(|e| self.map_err(e))?;
        let stored: Option<String> = conn
            .hget(&meta, "partitions")
            .await
            .map_err(|e| self.map_err(e))?;
        let stored: u32 = stored.as_deref().unwrap_or("0").parse().map_err(|_| {
            StoreError::Backend(format!("{meta} has a non-numeric partitions field"))
        })?;
        let layout: Option<String> = conn
            .hget(&meta, "layout")
            .await
            .map_err(|e| self.map_err(e))?;
        if layout.as_deref() != Some(LAYOUT) {
            return Err(StoreError::Backend(format!(
                "{meta} records key layout {:?} but this build uses layout {LAYOUT}; \
                 use another JOBSOURCE_PREFIX",
                layout.unwrap_or_default()
            )));
        }
        if stored != self.config.partitions {
            return Err(StoreError::PartitionMismatch {
                prefix: self.config.prefix.clone(),
                stored,
                configured: self.config.partitions,
            });
        }
        Ok(())
    }

    /// Reads `CONFIG GET appendonly` (on a cluster, from every master: `Off` when any
    /// master runs without AOF).
    pub async fn aof(&self) -> Aof {
        let replies = self.conn.on_every_master(conf_get_appendonly()).await;
        let replies = match replies {
            Ok(r) => r,
            Err(e) => return Aof::Unknown(e.to_string()),
        };
        let mut on = true;
        for reply in replies {
            match redis::from_redis_value::<Vec<String>>(reply) {
                Ok(v) => on &= v.get(1).map(String::as_str) == Some("yes"),
                Err(e) => return Aof::Unknown(e.to_string()),
            }
        }
        if on {
            Aof::On
        } else {
            Aof::Off
        }
    }

    /// Warns when AOF is off (acknowledged events could be lost on a Redis restart).
    /// Managed Redis often disables CONFIG: then it says so.
    async fn check_aof(&self) {
        match self.aof().await {
            Aof::On => tracing::info!(url = %self.url, "Redis AOF is on"),
            Aof::Off => tracing::warn!(
                url = %self.url,
                "Redis runs with appendonly=no: acknowledged events can be lost if Redis \
                 restarts; enable AOF (appendonly yes, appendfsync everysec or always) in production"
            ),
            Aof::Unknown(e) => tracing::warn!(url = %self.url, error = %e,
                "cannot read CONFIG GET appendonly; make sure AOF is enabled"),
        }
    }

    /// Sum of `MEMORY USAGE` over every key of this store (for benchmarks and ops).
    pub async fn memory_usage(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.keys.prefix());
        let keys = conn
            .scan_match(&pattern)
            .await
            .map_err(|e| self.map_err(e))?;
        let mut total = 0u64;
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
            }
            let sizes: Vec<Option<u64>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.map_err(e))?;
            total += sizes.into_iter().flatten().sum::<u64>();
        }
        Ok(total)
    }
}

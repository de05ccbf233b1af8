//! Redis Streams backend (SPEC section 4).
//!
//! - Appends run one Lua script (`append.lua`) that checks the authoritative version
//!   counter, writes the events to the partition log and the stream's history list and
//!   records the idempotency key, atomically.
//! - Commands share one auto-reconnecting multiplexed connection, so concurrent appends
//!   pipeline on one socket; blocking tail reads get a dedicated connection each.
//! - At connect the partition count is checked against `<prefix>:meta` and `appendonly` is
//!   read, with a warning when AOF is off.

mod keys;
mod queue;
mod tail;

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, Value};

pub use keys::Keys;

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
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    config: StoreConfig,
    url: String,
    append_script: Script,
    read_script: Script,
    claim_script: Script,
    lease_script: Script,
    groups: std::sync::Arc<group::Groups>,
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
    /// Connects, checks (or records) the partition count, and checks AOF.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<RedisStore, StoreError> {
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable {
            url: shown.clone(),
            message: format!("invalid Redis URL: {e}"),
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(|e| StoreError::Unavailable {
                url: shown.clone(),
                message: e.to_string(),
            })?;
        let groups = std::sync::Arc::new(group::Groups::new(
            config.partitions,
            config.group_commit_max,
        ));
        let store = RedisStore {
            client,
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
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, for callers that need dedicated connections.
    pub fn client(&self) -> &redis::Client {
        &self.client
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

    /// Reads `CONFIG GET appendonly`.
    pub async fn aof(&self) -> Aof {
        let mut conn = self.conn.clone();
        let reply: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(&mut conn)
            .await;
        match reply {
            Ok(v) if v.get(1).map(String::as_str) == Some("yes") => Aof::On,
            Ok(_) => Aof::Off,
            Err(e) => Aof::Unknown(e.to_string()),
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
        let mut total = 0u64;
        let mut cursor: u64 = 0;
        let pattern = format!("{}:*", self.keys.prefix());
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.map_err(e))?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
                }
                let sizes: Vec<Option<u64>> = pipe
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.map_err(e))?;
                total += sizes.into_iter().flatten().sum::<u64>();
            }
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }
}

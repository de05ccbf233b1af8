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

/// Maps a client error: connection problems become `Unavailable` naming the URL.
pub(crate) fn map_redis_error(url: &str, e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable {
            url: url.to_owned(),
            message: e.to_string(),
        }
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Parses an idempotency record `"<first> <last> <id>,<id>..."` into a replayed result.
fn parse_record(p: u32, stream: String, record: &str) -> Option<AppendResult> {
    let mut it = record.splitn(3, ' ');
    let first_version = it.next()?.parse().ok()?;
    let last_version = it.next()?.parse().ok()?;
    let positions = parse_positions(p, it.next().unwrap_or("").split(','))?;
    Some(AppendResult {
        stream,
        first_version,
        last_version,
        positions,
        replayed: true,
    })
}

/// Parses log entry ids returned by the append script into positions of partition `p`.
fn parse_positions<'a>(p: u32, ids: impl Iterator<Item = &'a str>) -> Option<Vec<Position>> {
    ids.map(|id| id.parse().ok().map(|id| Position::new(p, id)))
        .collect()
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn string_of(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        other => bytes_of(other).map(|b| String::from_utf8_lossy(b).into_owned()),
    }
}

/// Decodes one `[id, [field, value, ...]]` stream entry into a recorded event.
pub(crate) fn decode_entry(partition: u32, entry: &Value) -> Result<RecordedEvent, StoreError> {
    let bad = |at: String, message: &str| {
        StoreError::Decode(DecodeError {
            at,
            message: message.to_owned(),
        })
    };
    let Value::Array(parts) = entry else {
        return Err(bad(
            format!("partition {partition}"),
            "log entry is not an array",
        ));
    };
    let id_str = parts.first().and_then(string_of).unwrap_or_default();
    let id: LogId = id_str.parse().map_err(|_| {
        bad(
            format!("partition {partition}"),
            "log entry has no valid id",
        )
    })?;
    let position = Position::new(partition, id);
    let fields = match parts.get(1) {
        Some(Value::Array(f)) => f.as_slice(),
        Some(Value::Map(_)) | None | Some(_) => &[],
    };
    let json = fields
        .chunks(2)
        .find(|kv| kv.first().and_then(bytes_of) == Some(b"event".as_slice()))
        .and_then(|kv| kv.get(1).and_then(bytes_of))
        .ok_or_else(|| bad(position.to_string(), "log entry has no `event` field"))?;
    let envelope = codec::decode(json, &position)?;
    Ok(RecordedEvent { position, envelope })
}

#[async_trait]
impl EventStore for RedisStore {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::Invalid(
                "an append needs at least one event".into(),
            ));
        }
        let p = partition_of(&request.stream, self.config.partitions);
        let mut inv = self.append_script.prepare_invoke();
        inv.key(self.keys.versions(p, &request.stream))
            .key(self.keys.history(p, &request.stream))
            .key(self.keys.log(p));
        // KEYS[4] is only touched when a fingerprint is passed; without a key it is a
        // name in the same slot that is never read or written.
        match &request.idempotency {
            Some(idem) => inv.key(self.keys.idempotency(p, &request.stream, &idem.key)),
            None => inv.key(self.keys.idempotency(p, &request.stream, "-")),
        };
        for k in queue::index_keys(self, p) {
            inv.key(k);
        }
        let (kind, n) = match request.expected {
            ExpectedVersion::Any => ("any", 0),
            ExpectedVersion::NoStream => ("none", 0),
            ExpectedVersion::Exact(n) => ("exact", n),
        };
        inv.arg(&request.stream)
            .arg(kind)
            .arg(n)
            .arg(
                request
                    .idempotency
                    .as_ref()
                    .map_or("", |i| i.fingerprint.as_str()),
            )
            .arg(
                // PX 0 is an error, and an error after the writes would report a failure
                // for an append that happened: clamp to at least 1 ms.
                (self.config.idempotency_retention.as_millis() as u64).max(1),
            )
            .arg(request.events.len());
        match request.expected {
            // The version of every event is known unless the caller said Any (a mismatch
            // is refused by the script before anything is written), so the envelope is
            // sent whole and the script does no string building.
            ExpectedVersion::NoStream | ExpectedVersion::Exact(_) => {
                inv.arg("j");
                for (i, e) in request.events.iter().enumerate() {
                    let split = codec::encode_split(&request.stream, e);
                    inv.arg(split.join(n + 1 + i as u64));
                }
            }
            ExpectedVersion::Any => {
                inv.arg("s");
                for e in &request.events {
                    let split = codec::encode_split(&request.stream, e);
                    inv.arg(split.head).arg(split.tail);
                }
            }
        }
        queue::push_ops(
            &mut inv,
            &self.keys.tag(p),
            crate::queue::now_ms(),
            &request.queue,
        );
        let mut conn = self.conn.clone();
        let reply: Vec<String> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        let unexpected = || StoreError::Backend(format!("unexpected append reply {reply:?}"));
        match reply.first().map(String::as_str) {
            Some("OK") => {
                let first: u64 = reply
                    .get(1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(unexpected)?;
                let positions = parse_positions(p, reply[2..].iter().map(String::as_str))
                    .ok_or_else(unexpected)?;
                Ok(AppendResult {
                    stream: request.stream,
                    first_version: first,
                    last_version: first + positions.len() as u64 - 1,
                    positions,
                    replayed: false,
                })
            }
            Some("CONFLICT") => Err(StoreError::Conflict {
                actual: reply
                    .get(1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(unexpected)?,
                stream: request.stream,
                expected: request.expected,
            }),
            Some("NOT_DUE") => Err(StoreError::LeaseNotDue {
                stream: request.stream,
            }),
            Some("IDEM_MISMATCH") => Err(StoreError::IdempotencyKeyReused {
                key: request.idempotency.map(|i| i.key).unwrap_or_default(),
            }),
            Some("REPLAY") => {
                let record = reply.get(1).ok_or_else(unexpected)?;
                parse_record(p, request.stream, record).ok_or_else(unexpected)
            }
            _ => Err(unexpected()),
        }
    }

    async fn recall(
        &self,
        stream: &str,
        idempotency: &Idempotency,
    ) -> Result<Option<AppendResult>, StoreError> {
        let p = partition_of(stream, self.config.partitions);
        let mut conn = self.conn.clone();
        let record: Option<String> = conn
            .get(self.keys.idempotency(p, stream, &idempotency.key))
            .await
            .map_err(|e| self.map_err(e))?;
        let Some(record) = record else {
            return Ok(None);
        };
        let bad = || StoreError::Backend(format!("unreadable idempotency record for {stream}"));
        let (fingerprint, rest) = record.split_once('\n').ok_or_else(bad)?;
        if fingerprint != idempotency.fingerprint {
            return Err(StoreError::IdempotencyKeyReused {
                key: idempotency.key.clone(),
            });
        }
        parse_record(p, stream.to_owned(), rest)
            .map(Some)
            .ok_or_else(bad)
    }

    async fn reserve(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        // SET NX GET: sets when absent and returns the previous value either way (Redis 7).
        let previous: Option<String> = redis::cmd("SET")
            .arg(self.keys.reservation(name))
            .arg(value)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg((self.config.idempotency_retention.as_millis() as u64).max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(previous.unwrap_or_else(|| value.to_owned()))
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let p = partition_of(stream, self.config.partitions);
        let mut conn = self.conn.clone();
        let v: Option<u64> = conn
            .hget(self.keys.versions(p, stream), stream)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(v.unwrap_or(0))
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let p = partition_of(stream, self.config.partitions);
        let first = from_version.max(1) - 1;
        let last = first + limit as u64 - 1;
        let mut conn = self.conn.clone();
        let flat: Vec<Vec<u8>> = self
            .read_script
            .key(self.keys.history(p, stream))
            .key(self.keys.log(p))
            .arg(first)
            .arg(last)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for (i, pair) in flat.chunks(2).enumerate() {
            let version = first + i as u64 + 1;
            let at = format!("{stream}@{version}");
            let id: LogId = std::str::from_utf8(&pair[0])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| DecodeError {
                    at: at.clone(),
                    message: "history holds an invalid log id".into(),
                })?;
            let position = Position::new(p, id);
            let json = pair
                .get(1)
                .filter(|j| !j.is_empty())
                .ok_or_else(|| DecodeError {
                    at: format!("{at} ({position})"),
                    message: "log entry missing".into(),
                })?;
            let envelope = codec::decode(json, &position)?;
            out.push(RecordedEvent { position, envelope });
        }
        Ok(out)
    }

    async fn read_partition(
        &self,
        partition: u32,
        after: LogId,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if partition >= self.config.partitions {
            return Err(StoreError::Invalid(format!(
                "partition {partition} does not exist (store has {})",
                self.config.partitions
            )));
        }
        let mut conn = self.conn.clone();
        let entries: Value = redis::cmd("XRANGE")
            .arg(self.keys.log(partition))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        match entries {
            Value::Array(items) => items
                .iter()
                .map(|item| decode_entry(partition, item))
                .collect(),
            Value::Nil => Ok(Vec::new()),
            other => Err(StoreError::Backend(format!(
                "unexpected XRANGE reply {other:?}"
            ))),
        }
    }

    async fn partition_len(&self, partition: u32) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        conn.xlen(self.keys.log(partition))
            .await
            .map_err(|e| self.map_err(e))
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        let mut pipe = redis::pipe();
        for p in 0..self.config.partitions {
            pipe.cmd("XREVRANGE")
                .arg(self.keys.log(p))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<(String, Value)>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        let ids = replies
            .iter()
            .map(|r| {
                r.first()
                    .map(|(id, _)| id.parse().unwrap_or(LogId::ZERO))
                    .unwrap_or(LogId::ZERO)
            })
            .collect();
        Ok(Cursor::from_ids(ids))
    }

    async fn tail(&self, from: Cursor) -> Result<EventStream, StoreError> {
        tail::spawn(self.clone(), from).await
    }

    async fn claim(
        &self,
        partition: u32,
        spec: &crate::queue::ClaimSpec,
    ) -> Result<Option<crate::queue::Claimed>, StoreError> {
        self.claim_in(partition, spec).await
    }

    async fn renew_lease(
        &self,
        stream: &str,
        worker_id: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.renew_in(stream, worker_id, now_ms).await
    }

    async fn lease(&self, stream: &str) -> Result<Option<crate::queue::LeaseEntry>, StoreError> {
        self.lease_of(stream).await
    }

    async fn due_leases(
        &self,
        partition: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<crate::queue::LeaseEntry>, StoreError> {
        self.due_in(partition, now_ms, limit).await
    }

    async fn leases_of_machine(
        &self,
        machine_id: &str,
    ) -> Result<Vec<crate::queue::LeaseEntry>, StoreError> {
        self.machine_leases(machine_id).await
    }

    async fn ready_hint(&self, now_ms: u64) -> Result<Vec<bool>, StoreError> {
        self.hint(now_ms).await
    }
}

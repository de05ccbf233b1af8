//! The seed message bus bridge (`JOBSOURCE_SEED_BUS=true`): republishes every event of the
//! log the way the seed system's `MessageBusService.publishEvent` did, so the seed's
//! subscribers keep working against jobsource.
//!
//! For each event, in log order per partition, in the seed's shape (see [`shape`]):
//!
//! - `PUBLISH events:<type> <json>` and `PUBLISH events:* <json>` (`events:*` is a literal
//!   channel name: the seed published to it and `SUBSCRIBE`d to it, not a pattern);
//! - `XADD stream:<type> MAXLEN ~ <maxlen> * event_id <id> event_type <type> timestamp
//!   <ms> data <json>`.
//!
//! The bridge is a consumer on the subscriber runtime, named `seed_bus`: one checkpoint per
//! partition,
//! in Redis under `<prefix>:{p<N>}:seedbus:checkpoint`, written after each batch was
//! published. Delivery is at least once: a crash between a batch and its checkpoint
//! publishes the batch again; readers drop duplicates by `event_id` (the `id` of the JSON).
//! Redis failures are waited for with backoff and never skip an event.
//!
//! Channel and stream names are the seed's bare names, or `<namespace>:events:<type>` and
//! `<namespace>:stream:<type>` when a namespace is configured (`serve` uses a non-empty
//! `JOBSOURCE_READ_PREFIX`).

pub mod shape;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jobsource_eventstore::redis::RedisConn;
use jobsource_eventstore::{EventStore, LogId, RecordedEvent, StoreError};
use jobsource_projections::subscriber::{fenced, Handler, HandlerError, Outcome, SubscriberConfig};
use redis::AsyncCommands;

/// The consumer's name in status, the CLI and the API.
pub const NAME: &str = "seed_bus";

/// The `JOBSOURCE_SEED_BUS_MAXLEN` default: approximate length cap of each `stream:<type>`.
pub const DEFAULT_MAXLEN: u64 = 100_000;

/// Why a step of the bridge failed (all are retried; none skips an event).
#[derive(Debug, thiserror::Error)]
pub enum SeedBusError {
    /// Reading the event log.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// Publishing, or reading/writing a checkpoint.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A checkpoint that is not a log id.
    #[error("seed bus checkpoint of partition {partition} is corrupt ({value:?}): {message}")]
    CorruptCheckpoint {
        /// Partition.
        partition: u32,
        /// Stored value.
        value: String,
        /// Parse error.
        message: String,
    },
}

/// Settings of the bridge.
#[derive(Debug, Clone)]
pub struct SeedBusConfig {
    /// `MAXLEN ~` of every `stream:<type>`.
    pub maxlen: u64,
    /// Prepended as `<namespace>:` to every channel and stream name; empty: bare names.
    pub namespace: String,
    /// Events read from a partition log per batch (one pipeline, one checkpoint write).
    pub batch: usize,
    /// Longest wait for new events when caught up (the tail usually wakes it sooner).
    pub idle_wait: Duration,
    /// First delay after a failure (doubled each time).
    pub backoff: Duration,
    /// Longest delay after a failure.
    pub max_backoff: Duration,
}

impl Default for SeedBusConfig {
    fn default() -> Self {
        SeedBusConfig {
            maxlen: DEFAULT_MAXLEN,
            namespace: String::new(),
            batch: 256,
            idle_wait: Duration::from_millis(500),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Workflow step counts remembered for `workflow_step_completed` (bounded: cleared when
/// it grows past this many workflows, then refilled from the streams on demand).
const MAX_REMEMBERED_WORKFLOWS: usize = 10_000;

/// The bridge. Share it behind an `Arc`; [`SeedBus::run`] drives it.
pub struct SeedBus {
    store: Arc<dyn EventStore>,
    conn: RedisConn,
    prefix: String,
    config: SeedBusConfig,
    total_steps: Mutex<HashMap<String, u32>>,
}

impl SeedBus {
    /// A bridge reading `store`, publishing over `conn`, keeping its checkpoints under the
    /// store's key prefix `prefix`.
    pub fn new(
        store: Arc<dyn EventStore>,
        conn: RedisConn,
        prefix: &str,
        config: SeedBusConfig,
    ) -> Self {
        SeedBus {
            store,
            conn,
            prefix: prefix.to_owned(),
            config,
            total_steps: Mutex::new(HashMap::new()),
        }
    }

    /// `<prefix>:{p<N>}:seedbus:checkpoint`: partition `p`'s checkpoint (a log id string).
    pub fn checkpoint_key(&self, partition: u32) -> String {
        format!("{}:{{p{partition}}}:seedbus:checkpoint", self.prefix)
    }

    fn named(&self, name: &str) -> String {
        if self.config.namespace.is_empty() {
            name.to_owned()
        } else {
            format!("{}:{name}", self.config.namespace)
        }
    }

    /// The pub/sub channel of `event_type`: `events:<type>` (namespaced when configured).
    pub fn channel(&self, event_type: &str) -> String {
        self.named(&format!("events:{event_type}"))
    }

    /// The channel every event goes to: the literal `events:*` (namespaced when configured).
    pub fn all_channel(&self) -> String {
        self.named("events:*")
    }

    /// The stream of `event_type`: `stream:<type>` (namespaced when configured).
    pub fn stream_key(&self, event_type: &str) -> String {
        self.named(&format!("stream:{event_type}"))
    }

    /// The log id after which partition `partition` continues (`0-0` when never run).
    pub async fn checkpoint(&self, partition: u32) -> Result<LogId, SeedBusError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(self.checkpoint_key(partition)).await?;
        match raw {
            None => Ok(LogId::ZERO),
            Some(value) => value
                .parse()
                .map_err(
                    |e: jobsource_eventstore::ParseError| SeedBusError::CorruptCheckpoint {
                        partition,
                        value,
                        message: e.to_string(),
                    },
                ),
        }
    }

    /// Sets partition `partition`'s checkpoint (a plain set: moving it back replays).
    pub async fn set_checkpoint(&self, partition: u32, to: LogId) -> Result<(), SeedBusError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .set(self.checkpoint_key(partition), to.to_string())
            .await?;
        Ok(())
    }

    /// Publishes everything past the checkpoints, partition by partition, without the
    /// runtime's retries (tests and tools; `serve` runs the bridge on the subscriber
    /// runtime); returns the events published.
    pub async fn catch_up(&self) -> Result<usize, SeedBusError> {
        let mut published = 0;
        for p in 0..self.store.partitions() {
            loop {
                let after = self.checkpoint(p).await?;
                let batch = self
                    .store
                    .read_partition(p, after, self.config.batch)
                    .await?;
                let Some(last) = batch.last().map(|e| e.position.id) else {
                    break;
                };
                self.publish_batch(&batch).await?;
                self.set_checkpoint(p, last).await?;
                published += batch.len();
            }
        }
        Ok(published)
    }

    /// The runtime's settings for the bridge.
    pub fn subscriber_config(&self) -> SubscriberConfig {
        SubscriberConfig {
            batch: self.config.batch,
            backoff: self.config.backoff,
            max_backoff: self.config.max_backoff,
            idle_wait: self.config.idle_wait,
            // Every partition at once: each batch is one pipeline round trip.
            parallel: self.store.partitions() as usize,
            ..SubscriberConfig::default()
        }
    }

    /// One pipeline for the batch: per event the two PUBLISHes and the XADD, in order.
    async fn publish_batch(&self, batch: &[RecordedEvent]) -> Result<(), SeedBusError> {
        let mut pipe = redis::pipe();
        let all = self.all_channel();
        for event in batch {
            let env = &event.envelope;
            let total_steps = self.total_steps_for(event).await?;
            let message = shape::seed_event(env, &event.position, total_steps);
            let json = message.to_string();
            pipe.cmd("PUBLISH")
                .arg(self.channel(&env.event_type))
                .arg(&json)
                .ignore();
            pipe.cmd("PUBLISH").arg(&all).arg(&json).ignore();
            pipe.cmd("XADD")
                .arg(self.stream_key(&env.event_type))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.config.maxlen)
                .arg("*")
                .arg("event_id")
                .arg(env.event_id.to_string())
                .arg("event_type")
                .arg(&env.event_type)
                .arg("timestamp")
                .arg(env.occurred_at.timestamp_millis())
                .arg("data")
                .arg(&json)
                .ignore();
        }
        let mut conn = self.conn.clone();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// The step count of the workflow of a `workflow_step_completed` (remembered from its
    /// `workflow_created`, else read from the head of its stream); `None` otherwise.
    async fn total_steps_for(&self, event: &RecordedEvent) -> Result<Option<u32>, SeedBusError> {
        let env = &event.envelope;
        let remembered = |data: &jobsource_eventstore::Payload| {
            data.field("total_steps")
                .as_ref()
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        match env.event_type.as_str() {
            "workflow_created" => {
                if let Some(n) = remembered(&env.data) {
                    self.remember(&env.stream, n);
                }
                Ok(None)
            }
            "workflow_step_completed" => {
                if let Some(n) = self.steps().get(&env.stream).copied() {
                    return Ok(Some(n));
                }
                let head = self.store.read_stream(&env.stream, 1, 1).await?;
                let n = head
                    .first()
                    .filter(|e| e.envelope.event_type == "workflow_created")
                    .and_then(|e| remembered(&e.envelope.data));
                if let Some(n) = n {
                    self.remember(&env.stream, n);
                }
                Ok(n)
            }
            "workflow_completed" | "workflow_failed" | "workflow_cancelled" => {
                self.steps().remove(&env.stream);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn steps(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        // Single inserts and removes only: a poisoned lock is still sound.
        self.total_steps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, stream: &str, n: u32) {
        let mut steps = self.steps();
        if steps.len() >= MAX_REMEMBERED_WORKFLOWS {
            steps.clear();
        }
        steps.insert(stream.to_owned(), n);
    }
}

impl From<SeedBusError> for HandlerError {
    fn from(e: SeedBusError) -> Self {
        match e {
            SeedBusError::Store(e) => e.into(),
            SeedBusError::Redis(e) => jobsource_projections::ProjectionError::Redis(e).into(),
            e @ SeedBusError::CorruptCheckpoint { .. } => HandlerError::failed(e.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl Handler for SeedBus {
    fn name(&self) -> &str {
        NAME
    }

    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError> {
        Ok(SeedBus::checkpoint(self, partition).await?)
    }

    async fn apply(
        &self,
        partition: u32,
        _after: LogId,
        events: &[RecordedEvent],
        fence: Option<u64>,
    ) -> Result<Outcome, HandlerError> {
        let Some(last) = events.last().map(|e| e.position.id) else {
            return Ok(Outcome::Applied);
        };
        self.publish_batch(events).await?;
        match fence {
            None => self.set_checkpoint(partition, last).await?,
            Some(epoch) => {
                // Published already (at least once); only the checkpoint is fenced.
                let written = fenced::set_checkpoint(
                    &self.conn,
                    &fenced::CheckpointKey::Key {
                        checkpoint: self.checkpoint_key(partition),
                        fence: format!("{}:{{p{partition}}}:seedbus:fence", self.prefix),
                    },
                    partition,
                    &last.to_string(),
                    epoch,
                )
                .await?;
                if !written {
                    return Ok(Outcome::Fenced);
                }
            }
        }
        Ok(Outcome::Applied)
    }
}

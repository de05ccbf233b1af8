//! The Redis side of the runtime: the `redis` read model as a [`Handler`] (entity groups
//! and checkpoint in one script call) and a [`StatusStore`] in one Redis hash per consumer.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jobsource_eventstore::redis::RedisConn;
use jobsource_eventstore::{LogId, RecordedEvent};
use redis::AsyncCommands;

use super::{Handler, HandlerError, Outcome, Recorded, StatusStore};
use crate::error::ProjectionError;
use crate::redis_model::RedisReadModel;

/// The `redis` read model on the runtime. Its script sets the checkpoint with the batch;
/// every entity is guarded by its last applied version, so a batch applied twice (a
/// crash, a second worker) changes nothing the second time.
pub struct RedisModelHandler {
    model: Arc<RedisReadModel>,
}

impl RedisModelHandler {
    /// The handler of `model`.
    pub fn new(model: Arc<RedisReadModel>) -> Self {
        RedisModelHandler { model }
    }
}

#[async_trait]
impl Handler for RedisModelHandler {
    fn name(&self) -> &str {
        "redis"
    }

    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError> {
        Ok(self.model.checkpoint(partition).await?)
    }

    async fn apply(
        &self,
        partition: u32,
        _after: LogId,
        events: &[RecordedEvent],
        fence: Option<u64>,
    ) -> Result<Outcome, HandlerError> {
        Ok(
            match self.model.apply_events(partition, events, fence).await? {
                Some(_) => Outcome::Applied,
                None => Outcome::Fenced,
            },
        )
    }
}

/// Stalls and running state in one hash, field = partition, value = `running`, `stopped`
/// or `stalled\n<position>\n<error>`.
#[derive(Clone)]
pub struct RedisStatusStore {
    conn: RedisConn,
    key: String,
}

impl RedisStatusStore {
    /// The store in hash `key` (one consumer per key).
    pub fn new(conn: RedisConn, key: impl Into<String>) -> Self {
        RedisStatusStore {
            conn,
            key: key.into(),
        }
    }

    /// The store of the `redis` read model: `<rm>:projection:redis:state`.
    pub fn for_model(model: &RedisReadModel) -> Self {
        RedisStatusStore::new(
            model.connection(),
            model.keys().key("projection:redis:state"),
        )
    }
}

fn redis_err(e: redis::RedisError) -> HandlerError {
    ProjectionError::Redis(e).into()
}

/// Parses one field value of the hash.
pub fn parse(value: &str) -> Recorded {
    let mut it = value.splitn(3, '\n');
    match (it.next(), it.next(), it.next()) {
        (Some("stalled"), position, error) => Recorded::Stalled {
            error: error.unwrap_or_default().to_owned(),
            position: position.filter(|p| !p.is_empty()).map(str::to_owned),
        },
        (Some("stopped"), _, _) => Recorded::Stopped,
        _ => Recorded::Running,
    }
}

#[async_trait]
impl StatusStore for RedisStatusStore {
    async fn load(&self, _consumer: &str) -> Result<HashMap<u32, Recorded>, HandlerError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(&self.key).await.map_err(redis_err)?;
        Ok(all
            .into_iter()
            .filter_map(|(p, v)| Some((p.parse().ok()?, parse(&v))))
            .collect())
    }

    async fn stall(
        &self,
        _consumer: &str,
        partition: u32,
        error: &str,
        position: Option<&str>,
    ) -> Result<(), HandlerError> {
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(
            &self.key,
            partition,
            format!("stalled\n{}\n{error}", position.unwrap_or_default()),
        )
        .await
        .map_err(redis_err)
    }

    async fn resume(&self, consumer: &str) -> Result<u64, HandlerError> {
        let stalled: Vec<u32> = self
            .load(consumer)
            .await?
            .into_iter()
            .filter(|(_, r)| matches!(r, Recorded::Stalled { .. }))
            .map(|(p, _)| p)
            .collect();
        if stalled.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for p in &stalled {
            pipe.hset(&self.key, p, "running").ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(redis_err)?;
        Ok(stalled.len() as u64)
    }

    async fn set_running(
        &self,
        consumer: &str,
        partitions: u32,
        running: bool,
    ) -> Result<(), HandlerError> {
        let recorded = self.load(consumer).await?;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for p in 0..partitions {
            if !matches!(recorded.get(&p), Some(Recorded::Stalled { .. })) {
                pipe.hset(&self.key, p, if running { "running" } else { "stopped" })
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
    }
}

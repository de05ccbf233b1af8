//! The orchestrator's own durable state: one checkpoint per partition and the dependents
//! index (which jobs wait on which), behind a trait so embedded mode keeps it in memory and
//! full mode in Redis beside the event store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use jobsource_eventstore::redis::RedisConn;
use jobsource_eventstore::LogId;
use jobsource_projections::subscriber::fenced;
use redis::AsyncCommands;
use uuid::Uuid;

use crate::service::ServiceError;

/// Where the orchestrator keeps its checkpoints and its dependents index.
///
/// Implementations need no transactions: the orchestrator only ever adds to the index, and
/// a checkpoint that lags behind the commands it covers only causes a harmless redelivery
/// (every command carries a deterministic idempotency key).
#[async_trait]
pub trait OrchestratorState: Send + Sync + 'static {
    /// The log id after which partition `partition` continues (`0-0` when never advanced).
    async fn checkpoint(&self, partition: u32) -> Result<LogId, ServiceError>;

    /// Sets partition `partition`'s checkpoint to `to`.
    ///
    /// A plain set, not a maximum: an operator (or a test) may move it back to replay.
    async fn advance(&self, partition: u32, to: LogId) -> Result<(), ServiceError>;

    /// [`OrchestratorState::advance`] under a partition lease: refused (`false`) when a
    /// later lease holder (a higher `fence`) wrote the checkpoint. Without a fence, or in
    /// a store that keeps none (memory: one process), a plain advance.
    async fn advance_fenced(
        &self,
        partition: u32,
        to: LogId,
        fence: Option<u64>,
    ) -> Result<bool, ServiceError> {
        let _ = fence;
        self.advance(partition, to).await.map(|_| true)
    }

    /// Records that `dependent` waits for `dependency` (idempotent).
    async fn add_dependent(&self, dependency: Uuid, dependent: Uuid) -> Result<(), ServiceError>;

    /// The jobs recorded as waiting for `dependency`.
    async fn dependents(&self, dependency: Uuid) -> Result<Vec<Uuid>, ServiceError>;
}

/// In-process state for embedded mode (and tests): lost with the process, which is fine
/// there because the in-memory event store is lost with it too.
#[derive(Default)]
pub struct MemoryOrchestratorState {
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    checkpoints: HashMap<u32, LogId>,
    dependents: HashMap<Uuid, BTreeSet<Uuid>>,
}

impl MemoryOrchestratorState {
    /// Empty state: every checkpoint at the start, no dependents.
    pub fn new() -> Self {
        MemoryOrchestratorState::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        // Every mutation is a single insert, so a panic elsewhere cannot leave the maps
        // half-updated: a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl OrchestratorState for MemoryOrchestratorState {
    async fn checkpoint(&self, partition: u32) -> Result<LogId, ServiceError> {
        Ok(self
            .lock()
            .checkpoints
            .get(&partition)
            .copied()
            .unwrap_or(LogId::ZERO))
    }

    async fn advance(&self, partition: u32, to: LogId) -> Result<(), ServiceError> {
        self.lock().checkpoints.insert(partition, to);
        Ok(())
    }

    async fn add_dependent(&self, dependency: Uuid, dependent: Uuid) -> Result<(), ServiceError> {
        self.lock()
            .dependents
            .entry(dependency)
            .or_default()
            .insert(dependent);
        Ok(())
    }

    async fn dependents(&self, dependency: Uuid) -> Result<Vec<Uuid>, ServiceError> {
        Ok(self
            .lock()
            .dependents
            .get(&dependency)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default())
    }
}

/// State in Redis for full mode:
///
/// - `<prefix>:orchestrator:checkpoint`: hash, partition -> log id (`<ms>-<seq>`);
/// - `<prefix>:orchestrator:dependents:<job id>`: set of the job ids waiting for that job.
#[derive(Clone)]
pub struct RedisOrchestratorState {
    conn: RedisConn,
    prefix: String,
}

impl RedisOrchestratorState {
    /// State under `prefix` (the event store's prefix), over a shared connection.
    pub fn new(conn: RedisConn, prefix: &str) -> Self {
        RedisOrchestratorState {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    /// The checkpoint hash's key.
    pub fn checkpoint_key(&self) -> String {
        format!("{}:orchestrator:checkpoint", self.prefix)
    }

    /// The key of the set of jobs waiting for `dependency`.
    pub fn dependents_key(&self, dependency: Uuid) -> String {
        format!("{}:orchestrator:dependents:{dependency}", self.prefix)
    }
}

#[async_trait]
impl OrchestratorState for RedisOrchestratorState {
    async fn checkpoint(&self, partition: u32) -> Result<LogId, ServiceError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.hget(self.checkpoint_key(), partition).await?;
        match raw {
            None => Ok(LogId::ZERO),
            Some(s) => s.parse().map_err(|e| {
                ServiceError::Internal(format!(
                    "orchestrator checkpoint of partition {partition} is corrupt: {e}"
                ))
            }),
        }
    }

    async fn advance(&self, partition: u32, to: LogId) -> Result<(), ServiceError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .hset(self.checkpoint_key(), partition, to.to_string())
            .await?;
        Ok(())
    }

    async fn advance_fenced(
        &self,
        partition: u32,
        to: LogId,
        fence: Option<u64>,
    ) -> Result<bool, ServiceError> {
        let Some(epoch) = fence else {
            return self.advance(partition, to).await.map(|_| true);
        };
        fenced::set_checkpoint(
            &self.conn,
            &fenced::CheckpointKey::HashField(self.checkpoint_key()),
            partition,
            &to.to_string(),
            epoch,
        )
        .await
        .map_err(|e| ServiceError::Unavailable {
            backend: "redis",
            message: e.to_string(),
        })
    }

    async fn add_dependent(&self, dependency: Uuid, dependent: Uuid) -> Result<(), ServiceError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .sadd(self.dependents_key(dependency), dependent.to_string())
            .await?;
        Ok(())
    }

    async fn dependents(&self, dependency: Uuid) -> Result<Vec<Uuid>, ServiceError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = conn.smembers(self.dependents_key(dependency)).await?;
        members
            .iter()
            .map(|m| {
                m.parse().map_err(|e| {
                    ServiceError::Internal(format!(
                        "dependents index of job {dependency} holds {m:?}: {e}"
                    ))
                })
            })
            .collect()
    }
}

//! The `redis` projection: the seed system's keys under a read-model namespace `<rm>`.
//!
//! ```text
//! <rm>:job:<id>              hash: id, type, status, priority, progress, stage, payload,
//!                            requirements, webhook_url, workflow_id, step_index, depends_on
//!                            (JSON array, submission order), worker_id,
//!                            machine_id, attempt, result, error, retry_count, max_retries,
//!                            created_at, updated_at, started_at, completed_at, version
//! <rm>:jobs:pending          zset, score = priority (claims take the highest score; job ids
//!                            are UUID v7, so members of one score sort oldest first: FIFO)
//! <rm>:jobs:assigned|completed|failed   sets
//! <rm>:job:<id>:depends_on   set of job ids;  <rm>:job:<id>:dependents  set of job ids
//! <rm>:workflow:<id>         hash: id, name, description, status, total_steps,
//!                            completed_steps, job_ids, webhook_url, error, created_at,
//!                            updated_at, completed_at, version
//! <rm>:workflow:<id>:jobs    set of job ids
//! <rm>:projection:redis:checkpoint   hash: partition -> last applied log id
//! <rm>:machine:<id>, <rm>:machine:<id>:workers, <rm>:machines   see [`super::machines`]
//! ```
//! With an empty `<rm>` the keys are the seed's bare keys (`job:<id>`, `jobs:pending`, ...).
//!
//! Idempotence: a batch is one script call that applies each entity's events (folded into
//! one set of operations with the same final effect) only when they are above the entity
//! hash's `version` field, and moves the checkpoint in the same call; an event delivered
//! again (a replay from an earlier offset) changes nothing. An entity that had applied part
//! of the batch's events is applied event by event instead.

use jobsource_domain::job::JobEvent;
use jobsource_domain::machine::MachineEvent;
use jobsource_domain::workflow::WorkflowEvent;
use jobsource_eventstore::redis::RedisConn;
use jobsource_eventstore::typed::from_envelope;
use jobsource_eventstore::{EventStore, LogId, RecordedEvent};
use redis::Script;
use serde_json::json;

use super::machines::{machine_ops, MACHINE_WORKER_LUA};
use crate::error::ProjectionError;

mod batch;
mod ops;
mod scripts;
pub(crate) use batch::Ops;
use batch::*;
use scripts::*;

/// Builds keys under a read-model namespace.
#[derive(Debug, Clone)]
pub struct RmKeys {
    rm: String,
}

impl RmKeys {
    /// Keys under `rm` (empty: the seed's bare keys).
    pub fn new(rm: &str) -> Self {
        RmKeys { rm: rm.to_owned() }
    }

    /// `<rm>:<suffix>`, or `<suffix>` when the namespace is empty.
    pub fn key(&self, suffix: &str) -> String {
        if self.rm.is_empty() {
            suffix.to_owned()
        } else {
            format!("{}:{suffix}", self.rm)
        }
    }

    /// The namespace itself (`<rm>`, possibly empty).
    pub fn namespace(&self) -> &str {
        &self.rm
    }

    /// `<rm>:job:<id>`.
    pub fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }

    /// `<rm>:workflow:<id>`.
    pub fn workflow(&self, id: &str) -> String {
        self.key(&format!("workflow:{id}"))
    }

    /// The checkpoint hash of this projection.
    pub fn checkpoint(&self) -> String {
        self.key("projection:redis:checkpoint")
    }

    /// The lease epoch each partition's checkpoint was last written under.
    pub fn fence(&self) -> String {
        self.key("projection:redis:fence")
    }
}

/// The Redis read model projection.
pub struct RedisReadModel {
    conn: RedisConn,
    keys: RmKeys,
    script: Script,
    folded: Script,
}

impl RedisReadModel {
    /// A projection writing through `conn` under namespace `rm`.
    pub fn new(conn: RedisConn, rm: &str) -> Self {
        RedisReadModel {
            conn,
            keys: RmKeys::new(rm),
            script: Script::new(&format!("{MACHINE_WORKER_LUA}{BATCH_APPLY}")),
            folded: Script::new(&format!("{MACHINE_WORKER_LUA}{FOLDED_APPLY}")),
        }
    }

    /// The key builder.
    pub fn keys(&self) -> &RmKeys {
        &self.keys
    }

    fn err(e: redis::RedisError) -> ProjectionError {
        ProjectionError::Redis(e)
    }

    /// A clone of the model's connection.
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// The checkpoint of `partition`.
    pub async fn checkpoint(&self, partition: u32) -> Result<LogId, ProjectionError> {
        let mut conn = self.conn.clone();
        let v: Option<String> = redis::cmd("HGET")
            .arg(self.keys.checkpoint())
            .arg(partition)
            .query_async(&mut conn)
            .await
            .map_err(Self::err)?;
        Ok(v.and_then(|s| s.parse().ok()).unwrap_or(LogId::ZERO))
    }

    /// Sets every partition's checkpoint (replay from an offset).
    pub async fn reset(
        &self,
        cursor: &jobsource_eventstore::Cursor,
    ) -> Result<(), ProjectionError> {
        let mut pipe = redis::pipe();
        for p in 0..cursor.partitions() {
            pipe.cmd("HSET")
                .arg(self.keys.checkpoint())
                .arg(p)
                .arg(cursor.after(p).to_string())
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(Self::err)
    }

    /// Applies the next batch of `partition`; returns the number of events read.
    pub async fn run_batch(
        &self,
        store: &dyn EventStore,
        partition: u32,
        batch: usize,
    ) -> Result<usize, ProjectionError> {
        self.run_batch_until(store, partition, batch, None).await
    }

    /// [`RedisReadModel::run_batch`] that stops at `until` (inclusive) when given.
    pub async fn run_batch_until(
        &self,
        store: &dyn EventStore,
        partition: u32,
        batch: usize,
        until: Option<LogId>,
    ) -> Result<usize, ProjectionError> {
        let after = self.checkpoint(partition).await?;
        if until.is_some_and(|u| after >= u) {
            return Ok(0);
        }
        let mut events = store.read_partition(partition, after, batch).await?;
        if let Some(u) = until {
            events.retain(|e| e.position.id <= u);
        }
        self.apply_events(partition, &events, None)
            .await
            .map(|n| n.unwrap_or(0))
    }

    /// Applies `events` (the next events of `partition`, in log order) and moves the
    /// checkpoint past the last one; returns how many, or `None` when `fence` (the lease
    /// epoch) is below the one the checkpoint was last written under: nothing applied.
    pub async fn apply_events(
        &self,
        partition: u32,
        events: &[RecordedEvent],
        fence: Option<u64>,
    ) -> Result<Option<usize>, ProjectionError> {
        let Some(last) = events.last().map(|e| e.position.id) else {
            return Ok(Some(0));
        };
        let fence = fence.map(|f| f.to_string()).unwrap_or_default();
        // One script call: every entity's events folded into one guarded set of operations,
        // and the checkpoint, atomically; a batch re-read after a crash is refused entity by
        // entity by the version guards.
        let mut groups: Vec<Group> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for e in events {
            if let Some(ops) = self.ops_for(e)? {
                let v = e.envelope.version;
                let i = *index.entry(ops.keys[0].clone()).or_insert_with(|| {
                    groups.push(Group {
                        entity: ops.keys[0].clone(),
                        first: v,
                        last: v,
                        events: Vec::new(),
                    });
                    groups.len() - 1
                });
                groups[i].last = v;
                groups[i].events.push((v, ops));
            }
        }
        let mut folded = FoldedBatch::default();
        for g in &groups {
            folded.push(g);
        }
        let checkpoint = last.to_string();
        let mut inv = self.folded.prepare_invoke();
        for k in &folded.batch.keys {
            inv.key(k);
        }
        inv.key(self.keys.checkpoint()).key(self.keys.fence());
        inv.arg(partition).arg(&checkpoint).arg(&fence);
        for a in &folded.batch.args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let partial: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(Self::err)?;
        if partial.first() == Some(&-1) {
            return Ok(None);
        }
        if partial.is_empty() {
            return Ok(Some(events.len()));
        }
        // Entities that had applied part of their events (an overlapping replay): apply
        // those event by event, and move the checkpoint with them.
        let mut batch_ops = Batch::default();
        for g in partial
            .iter()
            .filter_map(|n| groups.get((*n as usize).wrapping_sub(1)))
        {
            for (v, ops) in &g.events {
                batch_ops.push(*v, ops.clone());
            }
        }
        let mut inv = self.script.prepare_invoke();
        for k in &batch_ops.keys {
            inv.key(k);
        }
        inv.key(self.keys.checkpoint()).key(self.keys.fence());
        inv.arg(partition).arg(&checkpoint).arg(&fence);
        for a in &batch_ops.args {
            inv.arg(a);
        }
        let applied: i64 = inv.invoke_async(&mut conn).await.map_err(Self::err)?;
        if applied < 0 {
            return Ok(None);
        }
        Ok(Some(events.len()))
    }

    /// Runs batches on every partition until caught up; returns events read.
    pub async fn catch_up(
        &self,
        store: &dyn EventStore,
        batch: usize,
    ) -> Result<u64, ProjectionError> {
        let mut total = 0;
        for p in 0..store.partitions() {
            loop {
                let n = self.run_batch(store, p, batch).await?;
                total += n as u64;
                if n < batch {
                    break;
                }
            }
        }
        Ok(total)
    }
}

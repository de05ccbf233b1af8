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
use jobsource_eventstore::typed::from_envelope;
use jobsource_eventstore::{EventStore, LogId, RecordedEvent};
use redis::aio::ConnectionManager;
use redis::Script;
use serde_json::json;

use super::machines::{machine_ops, MACHINE_WORKER_LUA};
use crate::error::ProjectionError;

/// Applies a whole batch atomically, with the checkpoint: for each event, its operations
/// run only when its version is above the entity hash's `version`.
/// KEYS: every key the batch touches, the checkpoint hash last. ARGV: partition,
/// checkpoint value, then per event: entity key index, version, op count, and per op:
/// name, key index, arg count, args.
const BATCH_APPLY: &str = r"
local i = 3
local applied = 0
while i <= #ARGV do
  local ek = KEYS[tonumber(ARGV[i])]
  local v = tonumber(ARGV[i + 1])
  local nops = tonumber(ARGV[i + 2])
  i = i + 3
  local apply = tonumber(redis.call('HGET', ek, 'version') or '0') < v
  for _ = 1, nops do
    local op, key, nargs = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
    if apply then
      if op == 'ZADD_BY_PRIORITY' then
        -- back into the pending zset with the priority recorded at submission
        redis.call('ZADD', key, redis.call('HGET', ek, 'priority') or '0', ARGV[i + 3])
      elseif op == 'MACHINE_WORKER' then
        machine_worker(ek, key, ARGV[i + 3], ARGV[i + 4])
      else
        redis.call(op, key, unpack(ARGV, i + 3, i + 2 + nargs))
      end
    end
    i = i + 3 + nargs
  end
  if apply then
    redis.call('HSET', ek, 'version', v)
    applied = applied + 1
  end
end
redis.call('HSET', KEYS[#KEYS], ARGV[1], ARGV[2])
return applied
";

/// Applies a batch folded per entity: each group carries one entity's events of the batch
/// folded into one set of operations, guarded by the entity's version range. A group the
/// entity has fully applied is skipped; a group it has partly applied (a replay that
/// overlaps) is left alone and reported, and the checkpoint is then not moved: the caller
/// applies those groups event by event with [`BATCH_APPLY`], which moves it.
/// KEYS: every key, the checkpoint hash last. ARGV: partition, checkpoint value, then per
/// group: entity key index, first version, last version, op count, ops (as in BATCH_APPLY).
/// Returns the 1-based numbers of the partly applied groups.
const FOLDED_APPLY: &str = r"
local i = 3
local group = 0
local partial = {}
while i <= #ARGV do
  group = group + 1
  local ek = KEYS[tonumber(ARGV[i])]
  local first, last = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local nops = tonumber(ARGV[i + 3])
  i = i + 4
  local cur = tonumber(redis.call('HGET', ek, 'version') or '0')
  local apply = cur < first
  if not apply and cur < last then partial[#partial + 1] = group end
  for _ = 1, nops do
    local op, key, nargs = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
    if apply then
      if op == 'ZADD_BY_PRIORITY' then
        redis.call('ZADD', key, redis.call('HGET', ek, 'priority') or '0', ARGV[i + 3])
      elseif op == 'MACHINE_WORKER' then
        machine_worker(ek, key, ARGV[i + 3], ARGV[i + 4])
      else
        redis.call(op, key, unpack(ARGV, i + 3, i + 2 + nargs))
      end
    end
    i = i + 3 + nargs
  end
  if apply then redis.call('HSET', ek, 'version', last) end
end
if #partial == 0 then redis.call('HSET', KEYS[#KEYS], ARGV[1], ARGV[2]) end
return partial
";

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
}

/// The operations one event turns into; `keys[0]` is the guarded entity hash.
#[derive(Clone)]
pub(crate) struct Ops {
    keys: Vec<String>,
    ops: Vec<(String, usize, Vec<String>)>,
}

impl Ops {
    pub(crate) fn new(entity: String) -> Self {
        Ops {
            keys: vec![entity],
            ops: Vec::new(),
        }
    }

    pub(crate) fn op(&mut self, name: &str, key: String, args: Vec<String>) -> &mut Self {
        let idx = match self.keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                self.keys.push(key);
                self.keys.len() - 1
            }
        };
        self.ops.push((name.to_owned(), idx, args));
        self
    }

    pub(crate) fn hset(&mut self, fields: &[(&str, String)]) -> &mut Self {
        let key = self.keys[0].clone();
        let args = fields
            .iter()
            .flat_map(|(k, v)| [(*k).to_owned(), v.clone()])
            .collect();
        self.op("HSET", key, args)
    }
}

/// A batch's keys (deduplicated, 1-based for Lua) and arguments for [`BATCH_APPLY`].
#[derive(Default)]
struct Batch {
    keys: Vec<String>,
    index: std::collections::HashMap<String, usize>,
    args: Vec<String>,
}

impl Batch {
    fn key(&mut self, k: &str) -> usize {
        if let Some(i) = self.index.get(k) {
            return *i;
        }
        self.keys.push(k.to_owned());
        self.index.insert(k.to_owned(), self.keys.len());
        self.keys.len()
    }

    fn push(&mut self, version: u64, ops: Ops) {
        let map: Vec<usize> = ops.keys.iter().map(|k| self.key(k)).collect();
        self.args.push(map[0].to_string());
        self.args.push(version.to_string());
        self.args.push(ops.ops.len().to_string());
        for (name, k, args) in ops.ops {
            self.args.push(name);
            self.args.push(map[k].to_string());
            self.args.push(args.len().to_string());
            self.args.extend(args);
        }
    }
}

/// What a run of hash operations leaves in one field.
#[derive(Clone)]
enum FieldOp {
    Set(String),
    SetIfAbsent(String),
    Delete,
}

/// A key and a field or member of it.
type KeyAnd = (String, String);
/// A set/zset operation on one member: name and, for `ZADD`, the score.
type MemberOp = (String, Option<String>);

/// One entity's events of a batch, folded into the operations with the same final effect:
/// per hash field the last write wins (`HSETNX` after a write is a no-op, after a delete a
/// write); per (key, member) of the shared sets and zsets the last operation wins. Hash
/// writes come first, so `ZADD_BY_PRIORITY` reads the priority they leave.
struct Group {
    entity: String,
    first: u64,
    last: u64,
    events: Vec<(u64, Ops)>,
}

impl Group {
    fn folded(&self) -> Vec<(String, String, Vec<String>)> {
        let mut fields: Vec<(KeyAnd, FieldOp)> = Vec::new();
        let mut members: Vec<(KeyAnd, MemberOp)> = Vec::new();
        fn slot<K: PartialEq, V>(list: &mut Vec<(K, V)>, k: K, v: V) -> Option<&mut V> {
            match list.iter().position(|(x, _)| *x == k) {
                Some(i) => Some(&mut list[i].1),
                None => {
                    list.push((k, v));
                    None
                }
            }
        }
        for (_, ops) in &self.events {
            for (name, k, args) in &ops.ops {
                let key = ops.keys[*k].clone();
                match name.as_str() {
                    "HSET" => {
                        for pair in args.chunks(2) {
                            if let [f, v] = pair {
                                let op = FieldOp::Set(v.clone());
                                if let Some(cur) =
                                    slot(&mut fields, (key.clone(), f.clone()), op.clone())
                                {
                                    *cur = op;
                                }
                            }
                        }
                    }
                    "HSETNX" => {
                        if let [f, v] = args.as_slice() {
                            let op = FieldOp::SetIfAbsent(v.clone());
                            if let Some(cur) = slot(&mut fields, (key.clone(), f.clone()), op) {
                                if matches!(cur, FieldOp::Delete) {
                                    *cur = FieldOp::Set(v.clone());
                                }
                            }
                        }
                    }
                    "HDEL" => {
                        for f in args {
                            if let Some(cur) =
                                slot(&mut fields, (key.clone(), f.clone()), FieldOp::Delete)
                            {
                                *cur = FieldOp::Delete;
                            }
                        }
                    }
                    // A machine worker's entry folds like a zset member: per worker, the
                    // last entry wins.
                    "ZADD" | super::machines::MACHINE_WORKER => {
                        for pair in args.chunks(2) {
                            if let [score, m] = pair {
                                let op = (name.clone(), Some(score.clone()));
                                if let Some(cur) =
                                    slot(&mut members, (key.clone(), m.clone()), op.clone())
                                {
                                    *cur = op;
                                }
                            }
                        }
                    }
                    other => {
                        for m in args {
                            let op = (other.to_owned(), None);
                            if let Some(cur) =
                                slot(&mut members, (key.clone(), m.clone()), op.clone())
                            {
                                *cur = op;
                            }
                        }
                    }
                }
            }
        }
        let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
        let mut sets: Vec<(String, Vec<String>)> = Vec::new();
        for ((key, field), op) in fields {
            match op {
                FieldOp::Set(v) => match sets.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, args)) => args.extend([field, v]),
                    None => sets.push((key, vec![field, v])),
                },
                FieldOp::SetIfAbsent(v) => out.push(("HSETNX".into(), key, vec![field, v])),
                FieldOp::Delete => out.push(("HDEL".into(), key, vec![field])),
            }
        }
        let mut ops: Vec<(String, String, Vec<String>)> = sets
            .into_iter()
            .map(|(k, a)| ("HSET".to_owned(), k, a))
            .collect();
        ops.extend(out);
        for ((key, member), (name, score)) in members {
            let args = match score {
                Some(s) => vec![s, member],
                None => vec![member],
            };
            ops.push((name, key, args));
        }
        ops
    }
}

/// A batch folded per entity, in [`FOLDED_APPLY`]'s argument layout.
#[derive(Default)]
struct FoldedBatch {
    batch: Batch,
}

impl FoldedBatch {
    fn push(&mut self, group: &Group) {
        let b = &mut self.batch;
        let entity = b.key(&group.entity);
        let ops = group.folded();
        b.args.push(entity.to_string());
        b.args.push(group.first.to_string());
        b.args.push(group.last.to_string());
        b.args.push(ops.len().to_string());
        for (name, key, args) in ops {
            let k = b.key(&key);
            b.args.push(name);
            b.args.push(k.to_string());
            b.args.push(args.len().to_string());
            b.args.extend(args);
        }
    }
}

fn js(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The Redis read model projection.
pub struct RedisReadModel {
    conn: ConnectionManager,
    keys: RmKeys,
    script: Script,
    folded: Script,
}

impl RedisReadModel {
    /// A projection writing through `conn` under namespace `rm`.
    pub fn new(conn: ConnectionManager, rm: &str) -> Self {
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
    pub fn connection(&self) -> ConnectionManager {
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
        let Some(last) = events.last().map(|e| e.position.id) else {
            return Ok(0);
        };
        // One script call: every entity's events folded into one guarded set of operations,
        // and the checkpoint, atomically; a batch re-read after a crash is refused entity by
        // entity by the version guards.
        let mut groups: Vec<Group> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for e in &events {
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
        inv.key(self.keys.checkpoint());
        inv.arg(partition).arg(&checkpoint);
        for a in &folded.batch.args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let partial: Vec<usize> = inv.invoke_async(&mut conn).await.map_err(Self::err)?;
        if partial.is_empty() {
            return Ok(events.len());
        }
        // Entities that had applied part of their events (an overlapping replay): apply
        // those event by event, and move the checkpoint with them.
        let mut batch_ops = Batch::default();
        for g in partial.iter().filter_map(|n| groups.get(n.wrapping_sub(1))) {
            for (v, ops) in &g.events {
                batch_ops.push(*v, ops.clone());
            }
        }
        let mut inv = self.script.prepare_invoke();
        for k in &batch_ops.keys {
            inv.key(k);
        }
        inv.key(self.keys.checkpoint());
        inv.arg(partition).arg(&checkpoint);
        for a in &batch_ops.args {
            inv.arg(a);
        }
        inv.invoke_async::<u64>(&mut conn)
            .await
            .map_err(Self::err)?;
        Ok(events.len())
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

    fn ops_for(&self, e: &RecordedEvent) -> Result<Option<Ops>, ProjectionError> {
        let env = &e.envelope;
        let bad = |err: jobsource_eventstore::DecodeError| ProjectionError::Apply {
            position: e.position.to_string(),
            message: err.to_string(),
        };
        let now = env
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if env.stream.starts_with("job-") {
            let event: JobEvent = from_envelope(env).map_err(bad)?;
            Ok(Some(self.job_ops(&event, now, &env.correlation_id)))
        } else if env.stream.starts_with("workflow-") {
            let event: WorkflowEvent = from_envelope(env).map_err(bad)?;
            Ok(Some(self.workflow_ops(&event, now, &env.correlation_id)))
        } else if env.stream.starts_with("machine-") {
            let event: MachineEvent = from_envelope(env).map_err(bad)?;
            Ok(Some(machine_ops(&self.keys, &event, now)))
        } else {
            Ok(None)
        }
    }

    fn job_ops(&self, event: &JobEvent, now: String, correlation_id: &str) -> Ops {
        let id = event.job_id().to_string();
        let k = &self.keys;
        let mut ops = Ops::new(k.job(&id));
        let pending = k.key("jobs:pending");
        let assigned = k.key("jobs:assigned");
        match event {
            JobEvent::JobSubmitted(s) => {
                ops.hset(&[
                    ("id", id.clone()),
                    ("type", s.job_type.clone()),
                    ("status", s.status.as_str().to_owned()),
                    ("priority", s.priority.to_string()),
                    ("progress", "0".into()),
                    (
                        "payload",
                        js(&json!({"prompt": s.prompt, "parameters": s.parameters})),
                    ),
                    ("requirements", js(&s.requirements)),
                    ("webhook_url", s.webhook_url.clone().unwrap_or_default()),
                    (
                        "workflow_id",
                        s.workflow_id.map(|w| w.to_string()).unwrap_or_default(),
                    ),
                    (
                        "step_index",
                        s.step_index.map(|i| i.to_string()).unwrap_or_default(),
                    ),
                    ("max_retries", s.max_retries.to_string()),
                    // Ordered as submitted (the depends_on set below is for lookups).
                    ("depends_on", js(&s.depends_on)),
                    ("retry_count", "0".into()),
                    ("attempt", "0".into()),
                    ("created_at", now.clone()),
                    ("updated_at", now),
                    // The seed's state synchronizer wrote it; readers of its hashes use it.
                    ("correlation_id", correlation_id.to_owned()),
                ]);
                if let Some(t) = s.available_at {
                    ops.hset(&[("available_at", rfc3339(t))]);
                }
                if s.depends_on.is_empty() {
                    ops.op("ZADD", pending, vec![s.priority.to_string(), id.clone()]);
                } else {
                    let deps: Vec<String> = s.depends_on.iter().map(|d| d.to_string()).collect();
                    ops.op("SADD", k.key(&format!("job:{id}:depends_on")), deps.clone());
                    for d in deps {
                        ops.op(
                            "SADD",
                            k.key(&format!("job:{d}:dependents")),
                            vec![id.clone()],
                        );
                    }
                }
                if let Some(w) = s.workflow_id {
                    ops.op("SADD", k.key(&format!("workflow:{w}:jobs")), vec![id]);
                }
            }
            JobEvent::JobReleased { .. } => {
                ops.hset(&[("status", "pending".into()), ("updated_at", now)]);
                ops.op("ZADD_BY_PRIORITY", pending, vec![id]);
            }
            JobEvent::JobAssigned {
                worker_id,
                machine_id,
                attempt,
                lease_expires_at,
                ..
            } => {
                ops.hset(&[
                    ("status", "assigned".into()),
                    ("worker_id", worker_id.clone()),
                    ("machine_id", machine_id.clone()),
                    ("attempt", attempt.to_string()),
                    ("progress", "0".into()),
                    (
                        "lease_expires_at",
                        lease_expires_at.map(rfc3339).unwrap_or_default(),
                    ),
                    ("available_at", String::new()),
                    ("assigned_at", now.clone()),
                    ("updated_at", now.clone()),
                ]);
                ops.op("HSETNX", k.job(&id), vec!["started_at".into(), now]);
                // A new attempt has no stage yet (as in the domain and the other models).
                ops.op("HDEL", k.job(&id), vec!["stage".into()]);
                ops.op("ZREM", pending, vec![id.clone()]);
                ops.op("SADD", assigned, vec![id]);
            }
            JobEvent::JobProgress {
                progress,
                stage,
                message,
                ..
            } => {
                let mut fields = vec![
                    ("status", "running".to_owned()),
                    ("progress", progress.to_string()),
                    ("updated_at", now),
                ];
                if let Some(s) = stage {
                    fields.push(("stage", s.clone()));
                }
                if let Some(m) = message {
                    fields.push(("message", m.clone()));
                }
                ops.hset(&fields);
            }
            JobEvent::JobCompleted {
                result,
                duration_ms,
                ..
            } => {
                ops.hset(&[
                    ("status", "completed".into()),
                    ("progress", "100".into()),
                    ("result", js(result)),
                    // Milliseconds (0 when the worker reported none), as the seed's field.
                    ("duration", duration_ms.unwrap_or(0).to_string()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
                ops.op("SREM", assigned, vec![id.clone()]);
                ops.op("SADD", k.key("jobs:completed"), vec![id]);
            }
            JobEvent::JobFailed {
                error,
                retry_count,
                will_retry,
                available_at,
                ..
            } => {
                ops.op("SREM", assigned, vec![id.clone()]);
                if *will_retry {
                    ops.hset(&[
                        ("status", "pending".into()),
                        ("error", js(error)),
                        ("retry_count", retry_count.to_string()),
                        ("failed_at", now.clone()),
                        ("progress", "0".into()),
                        ("lease_expires_at", String::new()),
                        (
                            "available_at",
                            available_at.map(rfc3339).unwrap_or_default(),
                        ),
                        ("updated_at", now),
                    ]);
                    ops.op("HDEL", k.job(&id), vec!["stage".into()]);
                    ops.op("ZADD_BY_PRIORITY", pending, vec![id]);
                } else {
                    ops.hset(&[
                        ("status", "failed".into()),
                        ("error", js(error)),
                        ("retry_count", retry_count.to_string()),
                        ("failed_at", now.clone()),
                        ("completed_at", now.clone()),
                        ("updated_at", now),
                    ]);
                    ops.op("SADD", k.key("jobs:failed"), vec![id]);
                }
            }
            // Only the envelope's fact: the `job_failed` that follows it does the accounting.
            JobEvent::JobLeaseExpired { .. } => {
                ops.hset(&[("updated_at", now)]);
            }
            JobEvent::JobCancelled { .. } => {
                ops.hset(&[
                    ("status", "cancelled".into()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
                ops.op("ZREM", pending, vec![id]);
            }
        }
        ops
    }

    fn workflow_ops(&self, event: &WorkflowEvent, now: String, correlation_id: &str) -> Ops {
        let wid = match event {
            WorkflowEvent::WorkflowCreated(c) => c.workflow_id,
            WorkflowEvent::WorkflowStepStarted { workflow_id, .. }
            | WorkflowEvent::WorkflowStepCompleted { workflow_id, .. }
            | WorkflowEvent::WorkflowCompleted { workflow_id, .. }
            | WorkflowEvent::WorkflowStepFailed { workflow_id, .. }
            | WorkflowEvent::WorkflowFailed { workflow_id, .. }
            | WorkflowEvent::WorkflowCancelled { workflow_id, .. } => *workflow_id,
        }
        .to_string();
        let mut ops = Ops::new(self.keys.workflow(&wid));
        match event {
            WorkflowEvent::WorkflowCreated(c) => {
                ops.hset(&[
                    ("id", wid.clone()),
                    ("name", c.name.clone()),
                    ("description", c.description.clone().unwrap_or_default()),
                    ("status", "pending".into()),
                    ("total_steps", c.total_steps.to_string()),
                    ("completed_steps", "0".into()),
                    ("job_ids", js(&c.job_ids)),
                    ("steps", js(&c.steps)),
                    ("webhook_url", c.webhook_url.clone().unwrap_or_default()),
                    ("created_at", now.clone()),
                    ("updated_at", now),
                    ("correlation_id", correlation_id.to_owned()),
                ]);
                let jobs: Vec<String> = c.job_ids.iter().map(|j| j.to_string()).collect();
                if !jobs.is_empty() {
                    ops.op("SADD", self.keys.key(&format!("workflow:{wid}:jobs")), jobs);
                }
            }
            WorkflowEvent::WorkflowStepStarted { .. } => {
                ops.hset(&[("status", "running".into()), ("updated_at", now)]);
            }
            WorkflowEvent::WorkflowStepCompleted {
                completed_steps, ..
            } => {
                ops.hset(&[
                    ("completed_steps", completed_steps.to_string()),
                    ("updated_at", now),
                ]);
            }
            WorkflowEvent::WorkflowCompleted {
                step_details,
                success_count,
                failed_count,
                ..
            } => {
                ops.hset(&[
                    ("status", "completed".into()),
                    ("step_details", js(step_details)),
                    ("success_count", success_count.to_string()),
                    ("failed_count", failed_count.to_string()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
            }
            WorkflowEvent::WorkflowStepFailed { error, .. } => {
                ops.hset(&[("error", js(error)), ("updated_at", now)]);
            }
            WorkflowEvent::WorkflowFailed { .. } => {
                ops.hset(&[
                    ("status", "failed".into()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
            }
            WorkflowEvent::WorkflowCancelled { .. } => {
                ops.hset(&[
                    ("status", "cancelled".into()),
                    ("completed_at", now.clone()),
                    ("updated_at", now),
                ]);
            }
        }
        ops
    }
}

/// A time as stored in hashes (RFC 3339, milliseconds, `Z`).
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

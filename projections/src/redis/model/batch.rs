//! What a batch of events becomes before it reaches Redis: each event's operations
//! ([`Ops`]), the per-event batch, and the per-entity folded groups.

/// The operations one event turns into; `keys[0]` is the guarded entity hash.
#[derive(Clone)]
pub(crate) struct Ops {
    pub(super) keys: Vec<String>,
    pub(super) ops: Vec<(String, usize, Vec<String>)>,
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
pub(super) struct Batch {
    pub(super) keys: Vec<String>,
    pub(super) index: std::collections::HashMap<String, usize>,
    pub(super) args: Vec<String>,
}

impl Batch {
    pub(super) fn key(&mut self, k: &str) -> usize {
        if let Some(i) = self.index.get(k) {
            return *i;
        }
        self.keys.push(k.to_owned());
        self.index.insert(k.to_owned(), self.keys.len());
        self.keys.len()
    }

    pub(super) fn push(&mut self, version: u64, ops: Ops) {
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
pub(super) enum FieldOp {
    Set(String),
    SetIfAbsent(String),
    Delete,
}

/// A key and a field or member of it.
pub(super) type KeyAnd = (String, String);
/// A set/zset operation on one member: name and, for `ZADD`, the score.
pub(super) type MemberOp = (String, Option<String>);

/// One entity's events of a batch, folded into the operations with the same final effect:
/// per hash field the last write wins (`HSETNX` after a write is a no-op, after a delete a
/// write); per (key, member) of the shared sets and zsets the last operation wins. Hash
/// writes come first, so `ZADD_BY_PRIORITY` reads the priority they leave.
pub(super) struct Group {
    pub(super) entity: String,
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) events: Vec<(u64, Ops)>,
}

impl Group {
    pub(super) fn folded(&self) -> Vec<(String, String, Vec<String>)> {
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
                    "ZADD" | super::super::machines::MACHINE_WORKER => {
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
pub(super) struct FoldedBatch {
    pub(super) batch: Batch,
}

impl FoldedBatch {
    pub(super) fn push(&mut self, group: &Group) {
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

pub(super) fn js(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
/// A time as stored in hashes (RFC 3339, milliseconds, `Z`).
pub(super) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

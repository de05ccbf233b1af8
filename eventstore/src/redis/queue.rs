//! The queue index on Redis ([`crate::queue`]): claims, lease renewals and lease reads,
//! each one script call on one partition's keys (one slot on Redis Cluster).

use redis::Value;

use super::{bytes_of, RedisStore};
use crate::codec;
use crate::envelope::RecordedEvent;
use crate::error::{DecodeError, StoreError};
use crate::partition::partition_of;
use crate::position::{LogId, Position};
use crate::queue::{ClaimSpec, Claimed, LeaseEntry, QueueOp};

pub(crate) const CLAIM_LUA: &str = include_str!("claim.lua");
pub(crate) const LEASE_LUA: &str = include_str!("lease.lua");

/// The keys of partition `p`'s queue index, in the order the append script takes them
/// (KEYS[5..9]).
pub(crate) fn index_keys(store: &RedisStore, p: u32) -> [String; 5] {
    let k = store.keys();
    [
        k.queue(p, "idx"),
        k.queue(p, "queues"),
        k.queue(p, "delayed"),
        k.queue(p, "leases"),
        k.queue(p, "lease"),
    ]
}

/// The arguments of the queue ops of one append command (six per op, see `append.lua`).
pub(crate) fn op_args(now_ms: u64, ops: &[QueueOp], out: &mut Vec<String>) {
    for op in ops {
        let args: [String; 6] = match op {
            QueueOp::Ready {
                queue,
                priority,
                available_at_ms,
                attempt,
            } => {
                let at = (*available_at_ms).max(now_ms);
                [
                    "R".into(),
                    queue.clone(),
                    available_at_ms.to_string(),
                    attempt.to_string(),
                    crate::queue::ready_score(*priority, at).to_string(),
                    String::new(),
                ]
            }
            QueueOp::Unready => [
                "U".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ],
            QueueOp::Lease {
                worker_id,
                machine_id,
                attempt,
                lease_ms,
                deadline_ms,
            } => [
                "L".into(),
                worker_id.clone(),
                machine_id.clone(),
                attempt.to_string(),
                lease_ms.to_string(),
                deadline_ms.to_string(),
            ],
            QueueOp::Renew { now_ms } => [
                "N".into(),
                now_ms.to_string(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ],
            QueueOp::Unlease => [
                "X".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ],
            QueueOp::ExpireDue {
                now_ms,
                attempt,
                force,
            } => [
                "E".into(),
                now_ms.to_string(),
                attempt.to_string(),
                if *force { "1" } else { "0" }.into(),
                "".into(),
                "".into(),
            ],
        };
        out.extend(args);
    }
}

fn text(v: &Value) -> Option<String> {
    bytes_of(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Parses flat `stream, deadline, record` triples of `lease.lua`.
fn parse_leases(flat: &[Value]) -> Vec<LeaseEntry> {
    flat.chunks(3)
        .filter_map(|t| {
            let stream = text(t.first()?)?;
            let deadline_ms = text(t.get(1)?)?.parse::<f64>().ok()? as u64;
            let rec = text(t.get(2)?)?;
            let mut f = rec.split('\n');
            Some(LeaseEntry {
                stream,
                worker_id: f.next()?.to_owned(),
                machine_id: f.next()?.to_owned(),
                attempt: f.next()?.parse().ok()?,
                lease_ms: f.next()?.parse().ok()?,
                deadline_ms,
            })
        })
        .collect()
}

impl RedisStore {
    async fn lease_script(&self, p: u32, args: &[String]) -> Result<Vec<Value>, StoreError> {
        let mut inv = self.lease_script.prepare_invoke();
        inv.key(self.keys().queue(p, "leases"))
            .key(self.keys().queue(p, "lease"));
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.connection();
        inv.invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))
    }

    pub(crate) async fn claim_in(
        &self,
        p: u32,
        spec: &ClaimSpec,
    ) -> Result<Option<Claimed>, StoreError> {
        if p >= self.partitions_count() {
            return Err(StoreError::Invalid(format!("partition {p} does not exist")));
        }
        let k = self.keys();
        let mut inv = self.claim_script.prepare_invoke();
        inv.key(k.queue(p, "queues"))
            .key(k.queue(p, "idx"))
            .key(k.queue(p, "delayed"))
            .key(k.log(p))
            .key(k.queue(p, "leases"))
            .key(k.queue(p, "lease"));
        inv.arg(k.tag(p))
            .arg(spec.now_ms)
            .arg(&spec.worker_id)
            .arg(&spec.machine_id)
            .arg(spec.lease_ms)
            .arg(spec.gpu_memory.map(|g| g.to_string()).unwrap_or_default())
            .arg(&spec.template);
        for c in &spec.capabilities {
            inv.arg(c);
        }
        let mut conn = self.connection();
        let reply: Vec<Value> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        match reply.first().and_then(text).as_deref() {
            Some("NONE") => Ok(None),
            Some("OK") => {
                let stream = reply
                    .get(1)
                    .and_then(text)
                    .ok_or_else(|| StoreError::Backend("claim reply without a stream".into()))?;
                let mut history = Vec::with_capacity(reply.len() / 2);
                for (i, pair) in reply[2..].chunks(2).enumerate() {
                    let at = format!("{stream}@{}", i + 1);
                    let id: LogId = pair
                        .first()
                        .and_then(text)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| DecodeError {
                            at: at.clone(),
                            message: "history holds an invalid log id".into(),
                        })?;
                    let position = Position::new(p, id);
                    let json = pair.get(1).and_then(bytes_of).unwrap_or_default();
                    let envelope = codec::decode(json, &position)?;
                    history.push(RecordedEvent { position, envelope });
                }
                Ok(Some(Claimed { stream, history }))
            }
            _ => Err(StoreError::Backend(format!(
                "unexpected claim reply {reply:?}"
            ))),
        }
    }

    pub(crate) async fn renew_in(
        &self,
        stream: &str,
        worker_id: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let p = partition_of(stream, self.partitions_count());
        let reply = self
            .lease_script(
                p,
                &[
                    "renew".into(),
                    stream.into(),
                    worker_id.into(),
                    now_ms.to_string(),
                ],
            )
            .await?;
        match reply.first().and_then(text).as_deref() {
            Some("OK") => Ok(reply.get(1).and_then(text).and_then(|d| d.parse().ok())),
            _ => Ok(None),
        }
    }

    pub(crate) async fn lease_of(&self, stream: &str) -> Result<Option<LeaseEntry>, StoreError> {
        let p = partition_of(stream, self.partitions_count());
        let reply = self.lease_script(p, &["one".into(), stream.into()]).await?;
        Ok(parse_leases(&reply).into_iter().next())
    }

    pub(crate) async fn due_in(
        &self,
        p: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<LeaseEntry>, StoreError> {
        let reply = self
            .lease_script(p, &["due".into(), now_ms.to_string(), limit.to_string()])
            .await?;
        Ok(parse_leases(&reply))
    }

    pub(crate) async fn machine_leases(
        &self,
        machine_id: &str,
    ) -> Result<Vec<LeaseEntry>, StoreError> {
        let mut out = Vec::new();
        for p in 0..self.partitions_count() {
            let reply = self.lease_script(p, &["all".into()]).await?;
            out.extend(
                parse_leases(&reply)
                    .into_iter()
                    .filter(|l| l.machine_id == machine_id),
            );
        }
        Ok(out)
    }

    pub(crate) async fn hint(&self, now_ms: u64) -> Result<Vec<bool>, StoreError> {
        let mut pipe = redis::pipe();
        for p in 0..self.partitions_count() {
            pipe.cmd("SCARD").arg(self.keys().queue(p, "queues"));
            pipe.cmd("ZCOUNT")
                .arg(self.keys().queue(p, "delayed"))
                .arg("-inf")
                .arg(now_ms);
        }
        let mut conn = self.connection();
        let counts: Vec<u64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(counts.chunks(2).map(|c| c.iter().any(|n| *n > 0)).collect())
    }
}

//! Partition leases: one instance at a time applies each (consumer, partition).
//!
//! A lease is a hash `<prefix>:{p<N>}:lease:<consumer>` (`owner`, `epoch`, `expires`, in
//! the partition's slot), taken and renewed by one script that reads the server's clock,
//! so instances never compare their own clocks. Each change of owner increments `epoch`:
//! the fencing token a consumer writes with its checkpoint, so a paused former owner that
//! lost its lease can never move the checkpoint again (its write carries a lower epoch).
//!
//! Instances announce themselves in the zset `<prefix>:instances` (score = expiry, server
//! time). [`Claims::refresh`] renews what it holds every third of the TTL, releases what is
//! over its fair share (`ceil(partitions / live instances)`) so a new instance gets its
//! share, and takes free or expired partitions up to that share: a dead instance's
//! partitions are taken over once its leases expire.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::HandlerError;
use crate::error::ProjectionError;

/// Who holds a lease, as the lease store answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder's instance id.
    pub owner: String,
    /// The fencing epoch (grows with each change of owner).
    pub epoch: u64,
    /// When it runs out (ms since the epoch, server clock).
    pub expires_at_ms: u64,
    /// The server's clock when it answered (ms).
    pub now_ms: u64,
}

/// Where leases and instance announcements live.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes (when free or expired) or renews (when ours) the lease of `consumer` on
    /// `partition` for `owner`; returns the holder after the call.
    async fn acquire(
        &self,
        consumer: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseInfo, HandlerError>;

    /// Gives the lease up when `owner` holds it (the epoch is kept).
    async fn release(
        &self,
        consumer: &str,
        partition: u32,
        owner: &str,
    ) -> Result<(), HandlerError>;

    /// The current holder of each partition `0..partitions` of `consumer` (`None`: free
    /// or expired).
    async fn holders(
        &self,
        consumer: &str,
        partitions: u32,
    ) -> Result<Vec<Option<LeaseInfo>>, HandlerError>;

    /// Announces `owner` as live for `ttl`; returns how many instances are live.
    async fn announce(&self, owner: &str, ttl: Duration) -> Result<usize, HandlerError>;

    /// Withdraws `owner` (a clean shutdown).
    async fn withdraw(&self, owner: &str) -> Result<(), HandlerError>;
}

/// Takes or renews a lease. KEYS[1] the lease hash. ARGV: owner, ttl ms.
/// Returns {owner, epoch, expires, now}.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'expires')
local owner, epoch, expires = cur[1], tonumber(cur[2] or '0'), tonumber(cur[3] or '0')
if owner and owner ~= ARGV[1] and expires > now then
  return {owner, epoch, expires, now}
end
if owner ~= ARGV[1] then epoch = epoch + 1 end
local until_ms = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch, 'expires', until_ms)
return {ARGV[1], epoch, until_ms, now}
";

/// Releases a lease held by ARGV[1] (expires now; the epoch stays).
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'expires', 0)
end
return 1
";

/// Announces ARGV[1] for ARGV[2] ms in the zset KEYS[1]; returns the live count.
const ANNOUNCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZCARD', KEYS[1])
";

/// Leases in the store's Redis, beside the partitions they guard.
pub struct RedisLeaseStore {
    conn: ConnectionManager,
    prefix: String,
    acquire: redis::Script,
    release: redis::Script,
    announce: redis::Script,
}

impl RedisLeaseStore {
    /// Leases under the store's key prefix `prefix`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        RedisLeaseStore {
            conn,
            prefix: prefix.to_owned(),
            acquire: redis::Script::new(ACQUIRE),
            release: redis::Script::new(RELEASE),
            announce: redis::Script::new(ANNOUNCE),
        }
    }

    /// `<prefix>:{p<N>}:lease:<consumer>`.
    pub fn key(&self, consumer: &str, partition: u32) -> String {
        format!("{}:{{p{partition}}}:lease:{consumer}", self.prefix)
    }

    fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }
}

fn redis_err(e: redis::RedisError) -> HandlerError {
    ProjectionError::Redis(e).into()
}

#[async_trait]
impl LeaseStore for RedisLeaseStore {
    async fn acquire(
        &self,
        consumer: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseInfo, HandlerError> {
        let mut conn = self.conn.clone();
        let (owner, epoch, expires_at_ms, now_ms): (String, u64, u64, u64) = self
            .acquire
            .key(self.key(consumer, partition))
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(LeaseInfo {
            owner,
            epoch,
            expires_at_ms,
            now_ms,
        })
    }

    async fn release(
        &self,
        consumer: &str,
        partition: u32,
        owner: &str,
    ) -> Result<(), HandlerError> {
        let mut conn = self.conn.clone();
        self.release
            .key(self.key(consumer, partition))
            .arg(owner)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(redis_err)
    }

    async fn holders(
        &self,
        consumer: &str,
        partitions: u32,
    ) -> Result<Vec<Option<LeaseInfo>>, HandlerError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for p in 0..partitions {
            pipe.cmd("HMGET")
                .arg(self.key(consumer, p))
                .arg("owner")
                .arg("epoch")
                .arg("expires");
        }
        let (time, rows): ((u64, u64), Vec<(Option<String>, Option<u64>, Option<u64>)>) = {
            let mut all: Vec<redis::Value> =
                pipe.query_async(&mut conn).await.map_err(redis_err)?;
            let time: (u64, u64) = redis::from_redis_value(all.remove(0))
                .map_err(|e| HandlerError::failed(format!("lease store: {e}")))?;
            let rows = all
                .into_iter()
                .map(redis::from_redis_value)
                .collect::<Result<_, _>>()
                .map_err(|e| HandlerError::failed(format!("lease store: {e}")))?;
            (time, rows)
        };
        let now_ms = time.0 * 1000 + time.1 / 1000;
        Ok(rows
            .into_iter()
            .map(|(owner, epoch, expires)| match (owner, expires) {
                (Some(owner), Some(expires)) if expires > now_ms => Some(LeaseInfo {
                    owner,
                    epoch: epoch.unwrap_or(0),
                    expires_at_ms: expires,
                    now_ms,
                }),
                _ => None,
            })
            .collect())
    }

    async fn announce(&self, owner: &str, ttl: Duration) -> Result<usize, HandlerError> {
        let mut conn = self.conn.clone();
        self.announce
            .key(self.instances())
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn withdraw(&self, owner: &str) -> Result<(), HandlerError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.instances())
            .arg(owner)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(redis_err)
    }
}

#[derive(Debug, Clone)]
struct Held {
    epoch: u64,
    /// When this instance stops treating the lease as its own (local clock, a margin
    /// before the server-side expiry).
    valid_until: Instant,
    renewed: Instant,
}

#[derive(Default)]
struct ClaimsState {
    held: HashMap<u32, Held>,
    /// Partitions held by others: not retried before their lease runs out.
    others: HashMap<u32, (LeaseInfo, Instant)>,
}

/// One consumer's view of its partition leases on this instance.
pub struct Claims {
    store: std::sync::Arc<dyn LeaseStore>,
    consumer: String,
    instance: String,
    ttl: Duration,
    partitions: u32,
    state: Mutex<ClaimsState>,
}

impl Claims {
    /// The claims of `consumer` on `partitions` partitions for `instance`.
    pub fn new(
        store: std::sync::Arc<dyn LeaseStore>,
        consumer: &str,
        instance: &str,
        ttl: Duration,
        partitions: u32,
    ) -> Self {
        Claims {
            store,
            consumer: consumer.to_owned(),
            instance: instance.to_owned(),
            ttl,
            partitions,
            state: Mutex::new(ClaimsState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, ClaimsState> {
        // Plain map writes only: a poisoned lock still holds sound maps.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The lease length.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fencing epoch of `partition` when this instance holds it now.
    pub fn epoch(&self, partition: u32) -> Option<u64> {
        let now = Instant::now();
        self.state()
            .held
            .get(&partition)
            .filter(|h| h.valid_until > now)
            .map(|h| h.epoch)
    }

    /// Forgets `partition` (its checkpoint write was fenced: someone else has it).
    pub fn lost(&self, partition: u32) {
        self.state().held.remove(&partition);
    }

    /// The holder of each partition, read from the lease store.
    pub async fn holders(&self) -> Result<Vec<Option<LeaseInfo>>, HandlerError> {
        self.store.holders(&self.consumer, self.partitions).await
    }

    /// Renews, balances and takes leases (see the module docs). Renewals happen every
    /// third of the TTL; free partitions are tried whenever their holder's lease ran out.
    pub async fn refresh(&self) -> Result<(), HandlerError> {
        let live = self.store.announce(&self.instance, self.ttl).await?.max(1);
        let share = (self.partitions as usize).div_ceil(live);
        let now = Instant::now();
        let (mut held, due): (Vec<u32>, Vec<u32>) = {
            let state = self.state();
            let mut held: Vec<u32> = state.held.keys().copied().collect();
            held.sort_unstable();
            let due = held
                .iter()
                .copied()
                .filter(|p| {
                    state
                        .held
                        .get(p)
                        .is_some_and(|h| now.duration_since(h.renewed) >= self.ttl / 3)
                })
                .collect();
            (held, due)
        };
        // Over the share: give the highest partitions up so newcomers get theirs.
        while held.len() > share {
            let Some(p) = held.pop() else { break };
            self.store
                .release(&self.consumer, p, &self.instance)
                .await?;
            self.state().held.remove(&p);
            tracing::info!(consumer = %self.consumer, partition = p, "partition lease released (rebalance)");
        }
        for p in due.into_iter().filter(|p| held.contains(p)) {
            self.take(p).await?;
        }
        let mut count = self.state().held.len();
        for p in 0..self.partitions {
            if count >= share {
                break;
            }
            let skip = {
                let state = self.state();
                state.held.contains_key(&p)
                    || state.others.get(&p).is_some_and(|(info, seen)| {
                        // Retried when the holder's lease runs out, or a third of the TTL
                        // later (it may have been released to rebalance).
                        let left =
                            Duration::from_millis(info.expires_at_ms.saturating_sub(info.now_ms));
                        now < *seen + left.min(self.ttl / 3)
                    })
            };
            if !skip && self.take(p).await? {
                count += 1;
                tracing::info!(consumer = %self.consumer, partition = p, "partition lease taken");
            }
        }
        Ok(())
    }

    /// Acquires or renews `partition`; true when held afterwards.
    async fn take(&self, partition: u32) -> Result<bool, HandlerError> {
        let asked = Instant::now();
        let info = self
            .store
            .acquire(&self.consumer, partition, &self.instance, self.ttl)
            .await?;
        let mut state = self.state();
        if info.owner == self.instance {
            // A margin for the round trip and clock drift: stop a little early.
            let valid = Duration::from_millis(info.expires_at_ms.saturating_sub(info.now_ms))
                .saturating_sub(self.ttl / 10);
            state.others.remove(&partition);
            state.held.insert(
                partition,
                Held {
                    epoch: info.epoch,
                    valid_until: asked + valid,
                    renewed: asked,
                },
            );
            Ok(true)
        } else {
            state.held.remove(&partition);
            state.others.insert(partition, (info, asked));
            Ok(false)
        }
    }

    /// Gives every lease up and withdraws the instance (a clean shutdown).
    pub async fn release_all(&self) {
        let held: Vec<u32> = self.state().held.drain().map(|(p, _)| p).collect();
        for p in held {
            if let Err(e) = self.store.release(&self.consumer, p, &self.instance).await {
                tracing::warn!(consumer = %self.consumer, partition = p, error = %e,
                    "cannot release a partition lease; it runs out on its own");
            }
        }
        let _ = self.store.withdraw(&self.instance).await;
    }
}

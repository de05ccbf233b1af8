//! Leases and instance announcements in the store's Redis: one hash per (consumer,
//! partition) in the partition's slot, taken and renewed by scripts on the server's clock.

use std::time::Duration;

use async_trait::async_trait;
use jobsource_eventstore::redis::RedisConn;

use super::{LeaseInfo, LeaseStore};
use crate::error::ProjectionError;
use crate::subscriber::HandlerError;

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
    conn: RedisConn,
    prefix: String,
    acquire: redis::Script,
    release: redis::Script,
    announce: redis::Script,
}

impl RedisLeaseStore {
    /// Leases under the store's key prefix `prefix`.
    pub fn new(conn: RedisConn, prefix: &str) -> Self {
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

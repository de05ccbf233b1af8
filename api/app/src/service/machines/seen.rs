//! When each machine was last seen (registered or heartbeated).
//!
//! A heartbeat that changes nothing is not an event, so this time lives outside the log:
//! in Redis a sorted set per partition, `<prefix>:{p<N>}:machines:seen` (member = machine
//! id, score = milliseconds since the epoch, `N` = the partition of the machine's stream,
//! so it shares the hash tag of that partition's keys), in memory for embedded mode. A
//! time never moves back (`ZADD GT`): a delayed heartbeat cannot make a machine look
//! staler than it is. The timeout sweeper reads the sets by score.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use jobsource_domain::machine_stream;
use jobsource_eventstore::partition::partition_of;
use jobsource_eventstore::redis::RedisConn;

use crate::service::ServiceError;

/// Members read per `ZRANGE` page by [`SeenStore::seen_between`].
const PAGE: usize = 1000;

/// Last-seen times of machines, in milliseconds since the epoch.
#[async_trait]
pub trait SeenStore: Send + Sync + 'static {
    /// Records that `machine_id` was seen at `at_ms` (a later time already stored wins);
    /// returns the time now stored.
    async fn touch(&self, machine_id: &str, at_ms: i64) -> Result<i64, ServiceError>;

    /// When `machine_id` was last seen.
    async fn last_seen(&self, machine_id: &str) -> Result<Option<i64>, ServiceError>;

    /// [`SeenStore::last_seen`] of several machines, in the order given.
    async fn last_seen_many(
        &self,
        machine_ids: &[String],
    ) -> Result<Vec<Option<i64>>, ServiceError>;

    /// Every machine last seen after `after_ms` (exclusive) and at or before `until_ms`,
    /// with its time.
    async fn seen_between(
        &self,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(String, i64)>, ServiceError>;
}

/// The embedded (in-process) store.
#[derive(Debug, Default)]
pub struct MemorySeenStore {
    seen: Mutex<HashMap<String, i64>>,
}

impl MemorySeenStore {
    /// An empty store.
    pub fn new() -> Self {
        MemorySeenStore::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl SeenStore for MemorySeenStore {
    async fn touch(&self, machine_id: &str, at_ms: i64) -> Result<i64, ServiceError> {
        let mut map = self.map();
        let t = map.entry(machine_id.to_owned()).or_insert(at_ms);
        *t = (*t).max(at_ms);
        Ok(*t)
    }

    async fn last_seen(&self, machine_id: &str) -> Result<Option<i64>, ServiceError> {
        Ok(self.map().get(machine_id).copied())
    }

    async fn last_seen_many(
        &self,
        machine_ids: &[String],
    ) -> Result<Vec<Option<i64>>, ServiceError> {
        let map = self.map();
        Ok(machine_ids.iter().map(|id| map.get(id).copied()).collect())
    }

    async fn seen_between(
        &self,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(String, i64)>, ServiceError> {
        let mut out: Vec<(String, i64)> = self
            .map()
            .iter()
            .filter(|(_, t)| **t > after_ms && **t <= until_ms)
            .map(|(id, t)| (id.clone(), *t))
            .collect();
        out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(out)
    }
}

/// The Redis store: one sorted set per partition of the event store.
#[derive(Clone)]
pub struct RedisSeenStore {
    conn: RedisConn,
    prefix: String,
    partitions: u32,
}

impl std::fmt::Debug for RedisSeenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSeenStore")
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl RedisSeenStore {
    /// The sets of the event store under `prefix` with `partitions` partitions.
    pub fn new(conn: RedisConn, prefix: &str, partitions: u32) -> Self {
        RedisSeenStore {
            conn,
            prefix: prefix.to_owned(),
            partitions: partitions.max(1),
        }
    }

    /// `<prefix>:{p<N>}:machines:seen`.
    pub fn key_of_partition(&self, partition: u32) -> String {
        format!("{}:{{p{partition}}}:machines:seen", self.prefix)
    }

    /// The set holding `machine_id`.
    pub fn key(&self, machine_id: &str) -> String {
        self.key_of_partition(partition_of(&machine_stream(machine_id), self.partitions))
    }
}

/// A score as stored (milliseconds fit a double exactly).
fn score(s: f64) -> i64 {
    s as i64
}

#[async_trait]
impl SeenStore for RedisSeenStore {
    async fn touch(&self, machine_id: &str, at_ms: i64) -> Result<i64, ServiceError> {
        let key = self.key(machine_id);
        let mut conn = self.conn.clone();
        let (stored,): (Option<f64>,) = redis::pipe()
            .cmd("ZADD")
            .arg(&key)
            .arg("GT")
            .arg(at_ms)
            .arg(machine_id)
            .ignore()
            .cmd("ZSCORE")
            .arg(&key)
            .arg(machine_id)
            .query_async(&mut conn)
            .await?;
        Ok(stored.map_or(at_ms, score))
    }

    async fn last_seen(&self, machine_id: &str) -> Result<Option<i64>, ServiceError> {
        let mut conn = self.conn.clone();
        let s: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.key(machine_id))
            .arg(machine_id)
            .query_async(&mut conn)
            .await?;
        Ok(s.map(score))
    }

    async fn last_seen_many(
        &self,
        machine_ids: &[String],
    ) -> Result<Vec<Option<i64>>, ServiceError> {
        if machine_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in machine_ids {
            pipe.cmd("ZSCORE").arg(self.key(id)).arg(id);
        }
        let mut conn = self.conn.clone();
        let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await?;
        Ok(scores.into_iter().map(|s| s.map(score)).collect())
    }

    async fn seen_between(
        &self,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(String, i64)>, ServiceError> {
        let mut out = Vec::new();
        if until_ms <= after_ms {
            return Ok(out);
        }
        let mut conn = self.conn.clone();
        let low = if after_ms == i64::MIN {
            "-inf".to_owned()
        } else {
            format!("({after_ms}")
        };
        for p in 0..self.partitions {
            let key = self.key_of_partition(p);
            let mut offset = 0usize;
            loop {
                let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(&low)
                    .arg(until_ms)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(PAGE)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await?;
                let n = page.len();
                out.extend(page.into_iter().map(|(id, s)| (id, score(s))));
                if n < PAGE {
                    break;
                }
                offset += n;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_keeps_the_latest_time_and_ranges_by_it() {
        let s = MemorySeenStore::new();
        assert_eq!(s.touch("a", 100).await.unwrap(), 100);
        assert_eq!(s.touch("a", 50).await.unwrap(), 100);
        s.touch("b", 200).await.unwrap();
        s.touch("c", 300).await.unwrap();
        assert_eq!(s.last_seen("a").await.unwrap(), Some(100));
        assert_eq!(s.last_seen("z").await.unwrap(), None);
        assert_eq!(
            s.last_seen_many(&["c".into(), "z".into()]).await.unwrap(),
            vec![Some(300), None]
        );
        assert_eq!(
            s.seen_between(100, 300).await.unwrap(),
            vec![("b".to_owned(), 200), ("c".to_owned(), 300)]
        );
        assert_eq!(s.seen_between(i64::MIN, 100).await.unwrap().len(), 1);
    }
}

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

mod claims;
mod redis_store;

pub use claims::Claims;
pub use redis_store::RedisLeaseStore;

use std::time::Duration;

use async_trait::async_trait;

use super::HandlerError;

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

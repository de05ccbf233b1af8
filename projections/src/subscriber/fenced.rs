//! Fenced checkpoint writes for consumers that keep their checkpoints in Redis outside a
//! batch script (the orchestrator, the seed bus): the write happens only when the lease
//! epoch it carries is not below the last one recorded for the partition.

use jobsource_eventstore::redis::RedisConn;

use super::HandlerError;
use crate::error::ProjectionError;

/// Where a partition's checkpoint and its fence live (always in one slot).
#[derive(Debug, Clone)]
pub enum CheckpointKey {
    /// A field (the partition number) of a hash; the fence is the field `fence:<p>` of
    /// the same hash.
    HashField(String),
    /// A string key of its own, with its fence in a second string key of the same slot.
    Key {
        /// The checkpoint key.
        checkpoint: String,
        /// The fence key.
        fence: String,
    },
}

/// KEYS[1] checkpoint, KEYS[2] fence key (`key` mode). ARGV: partition, value, epoch,
/// `hash`|`key`. Returns 1 when written, 0 when fenced.
const FENCED_SET: &str = r"
local hash = ARGV[4] == 'hash'
local f
if hash then
  f = tonumber(redis.call('HGET', KEYS[1], 'fence:' .. ARGV[1]) or '0')
else
  f = tonumber(redis.call('GET', KEYS[2]) or '0')
end
if tonumber(ARGV[3]) < f then return 0 end
if hash then
  redis.call('HSET', KEYS[1], 'fence:' .. ARGV[1], ARGV[3], ARGV[1], ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
";

/// Sets the checkpoint of `partition` to `value` unless a later lease holder (a higher
/// epoch in its fence) wrote it; returns whether it was written.
pub async fn set_checkpoint(
    conn: &RedisConn,
    checkpoint: &CheckpointKey,
    partition: u32,
    value: &str,
    epoch: u64,
) -> Result<bool, HandlerError> {
    let (key, fence, mode) = match checkpoint {
        CheckpointKey::HashField(k) => (k, k, "hash"),
        CheckpointKey::Key { checkpoint, fence } => (checkpoint, fence, "key"),
    };
    let mut conn = conn.clone();
    let written: i64 = redis::Script::new(FENCED_SET)
        .key(key)
        .key(fence)
        .arg(partition)
        .arg(value)
        .arg(epoch)
        .arg(mode)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| HandlerError::from(ProjectionError::Redis(e)))?;
    Ok(written == 1)
}

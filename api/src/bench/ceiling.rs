//! The raw Redis ceiling for the append benchmark, measured in the same run.
//!
//! One minimal atomic script per event (version check, two writes: `XADD` of the payload to
//! a log and `HSET` of the new version) sent by the same number of concurrent clients over
//! the same kind of connection, with the same payload size and none of jobsource's work
//! (no domain, no envelope, no history list, no idempotency). The ratio of the real append
//! rate to this is what SPEC section 8 asks for (>= 80 %).

use std::sync::Arc;
use std::time::Instant;

use redis::Script;

const RAW_LUA: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if v ~= tonumber(ARGV[2]) then return -1 end
redis.call('XADD', KEYS[2], '*', 'event', ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], v + 1)
return v + 1
";

/// Runs `events` raw script calls from `concurrency` tasks; returns calls per second.
pub async fn measure(
    conn: jobsource_eventstore::redis::RedisConn,
    prefix: &str,
    events: u64,
    concurrency: u64,
    payload_bytes: usize,
) -> anyhow::Result<f64> {
    let script = Arc::new(Script::new(RAW_LUA));
    let payload = Arc::new("x".repeat(payload_bytes));
    let per_task = events.div_ceil(concurrency.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (script, payload, mut conn) = (script.clone(), payload.clone(), conn.clone());
        // Same hash tag for both keys, as a cluster-safe script needs.
        let versions = format!("{prefix}:ceiling:{{c{t}}}:v");
        let log = format!("{prefix}:ceiling:{{c{t}}}:log");
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let v: i64 = script
                    .key(&versions)
                    .key(&log)
                    .arg("s")
                    .arg(i)
                    .arg(payload.as_str())
                    .invoke_async(&mut conn)
                    .await?;
                anyhow::ensure!(v == i as i64 + 1, "raw script version mismatch");
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((per_task * concurrency) as f64 / secs)
}

//! `jobsource bench ...`: load generators that print a table and, as the last line, JSON.

pub mod append;
pub mod ceiling;
pub mod commands;
pub mod lifecycle;
pub mod rebuild;
pub mod report;

use jobsource_eventstore::RedisStore;

/// Deletes every key matching `pattern` (SCAN + UNLINK, never a blocking KEYS; every
/// master on a cluster).
pub async fn delete_keys(store: &RedisStore, pattern: &str) -> anyhow::Result<()> {
    let mut conn = store.connection();
    let keys = conn.scan_match(pattern).await?;
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}

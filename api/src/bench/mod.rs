//! `jobsource bench ...`: load generators that print a table and, as the last line, JSON.

pub mod append;
pub mod ceiling;
pub mod commands;
pub mod lifecycle;
pub mod rebuild;
pub mod report;

use jobsource_eventstore::RedisStore;

/// Deletes every key matching `pattern` (SCAN + UNLINK, never a blocking KEYS).
pub async fn delete_keys(store: &RedisStore, pattern: &str) -> anyhow::Result<()> {
    let mut conn = store.connection();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

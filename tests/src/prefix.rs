//! Per-test Redis key prefixes and their cleanup.

use redis::aio::MultiplexedConnection;
use redis::RedisResult;

/// A key prefix no other test (or run) shares: `t:<name>:<12 hex chars>`.
///
/// `test_name` is reduced to `[A-Za-z0-9_-]` (other characters become `_`), so the prefix
/// never contains glob characters, `:` or hash-tag braces.
pub fn unique_prefix(test_name: &str) -> String {
    let name: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t:{name}:{}", &id[..12])
}

/// A multiplexed connection to the Redis at `url`.
pub async fn redis_connection(url: &str) -> RedisResult<MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// Escapes the Redis glob characters `* ? [ ] \` so `s` matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Deletes every key matching `<prefix>:*` (and the key `<prefix>` itself) with SCAN
/// (on every master of a cluster), returning how many keys were deleted. Keys are deleted
/// one `DEL` each (pipelined), so this also works where keys live in different hash slots.
pub async fn cleanup_prefix(
    target: impl Into<jobsource_eventstore::redis::RedisTarget>,
    prefix: &str,
) -> RedisResult<usize> {
    let target = target.into();
    let mut conn = jobsource_eventstore::redis::RedisConn::open(&target)
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
    let pattern = format!("{}:*", glob_escape(prefix));
    let mut deleted: usize = redis::cmd("DEL").arg(prefix).query_async(&mut conn).await?;
    let keys = conn.scan_match(&pattern).await?;
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("DEL").arg(key);
        }
        let counts: Vec<usize> = pipe.query_async(&mut conn).await?;
        deleted += counts.iter().sum::<usize>();
    }
    Ok(deleted)
}

/// Writes an entry no reader can decode (its `event` field is not JSON) at the end of
/// `partition`'s log of `store`; returns its log entry id.
pub async fn corrupt_log_entry(
    store: &jobsource_eventstore::RedisStore,
    partition: u32,
) -> RedisResult<String> {
    let mut conn = store.connection();
    redis::cmd("XADD")
        .arg(store.keys().log(partition))
        .arg("*")
        .arg("event")
        .arg("{this is not json")
        .query_async(&mut conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_sanitized_and_unique() {
        let a = unique_prefix("my test[1]*{x}:y");
        let b = unique_prefix("my test[1]*{x}:y");
        assert!(a.starts_with("t:my_test_1___x__y:"), "{a}");
        assert_eq!(a.len(), "t:my_test_1___x__y:".len() + 12);
        assert_ne!(a, b);
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape(r"a*b?[c]\d"), r"a\*b\?\[c\]\\d");
    }
}

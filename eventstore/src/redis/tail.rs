//! Live tail: blocking `XREAD` over every partition log on a dedicated connection.
//!
//! Blocking reads must never run on the shared multiplexed connection (they would stall
//! every command queued behind them), so each tail opens its own connection without a
//! response timeout. A background task reads batches and feeds a bounded channel; when
//! the consumer is slow the channel fills and the task waits (backpressure), and when the
//! consumer drops the stream the task ends. Connection errors are yielded once and the
//! task reconnects, continuing from the last delivered position, so nothing is skipped.

use std::collections::HashMap;
use std::time::Duration;

use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc;

use super::{decode_entry, map_redis_error, RedisStore};
use crate::error::StoreError;
use crate::position::Cursor;
use crate::store::EventStream;

const BLOCK_MS: u64 = 1000;
const BATCH: usize = 1000;

pub(super) async fn spawn(store: RedisStore, from: Cursor) -> Result<EventStream, StoreError> {
    let (tx, mut rx) = mpsc::channel(4 * BATCH);
    // Connect once up front so a bad URL surfaces to the caller instead of the stream.
    let conn = connect(&store).await?;
    tokio::spawn(run(store, from, conn, tx));
    Ok(Box::pin(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
    })))
}

async fn connect(store: &RedisStore) -> Result<redis::aio::MultiplexedConnection, StoreError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(None);
    store
        .client()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| map_redis_error(store.url(), e))
}

async fn run(
    store: RedisStore,
    mut cursor: Cursor,
    conn: redis::aio::MultiplexedConnection,
    tx: mpsc::Sender<Result<crate::envelope::RecordedEvent, StoreError>>,
) {
    let partitions = cursor.partitions();
    let logs: Vec<String> = (0..partitions).map(|p| store.keys().log(p)).collect();
    let by_key: HashMap<&str, u32> = logs
        .iter()
        .enumerate()
        .map(|(p, k)| (k.as_str(), p as u32))
        .collect();
    let mut conn = Some(conn);
    let mut backoff = Duration::from_millis(100);
    loop {
        if tx.is_closed() {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&store).await {
                Ok(c) => {
                    backoff = Duration::from_millis(100);
                    conn.insert(c)
                }
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS");
        for k in &logs {
            cmd.arg(k);
        }
        for p in 0..partitions {
            cmd.arg(cursor.after(p).to_string());
        }
        let reply: Result<Value, _> = cmd.query_async(c).await;
        let reply = match reply {
            Ok(v) => v,
            Err(e) => {
                conn = None;
                if tx.send(Err(map_redis_error(store.url(), e))).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        for (key, entries) in streams_of(reply) {
            let Some(&p) = by_key.get(key.as_str()) else {
                continue;
            };
            for entry in &entries {
                let item = decode_entry(p, entry);
                if let Ok(ev) = &item {
                    cursor.advance(ev.position);
                }
                let failed = item.is_err();
                if tx.send(item).await.is_err() {
                    return;
                }
                if failed {
                    // A corrupt entry: report it and stop this partition's tail position
                    // from moving past it silently by ending the stream; the consumer
                    // decides (stall, alert) and can restart from its checkpoint.
                    return;
                }
            }
        }
    }
}

/// Flattens an XREAD reply (RESP2 array or RESP3 map) into (key, entries).
fn streams_of(reply: Value) -> Vec<(String, Vec<Value>)> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let v = kv.pop()?;
                    let k = kv.pop()?;
                    Some((k, v))
                }
                _ => None,
            })
            .collect(),
        Value::Map(kv) => kv,
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let key = match k {
                Value::BulkString(b) => String::from_utf8(b).ok()?,
                Value::SimpleString(s) => s,
                _ => return None,
            };
            let entries = match v {
                Value::Array(e) => e,
                _ => Vec::new(),
            };
            Some((key, entries))
        })
        .collect()
}

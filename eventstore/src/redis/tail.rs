//! Live tail: blocking `XREAD` over the partition logs on dedicated connections.
//!
//! Blocking reads must never run on the shared multiplexed connection (they would stall
//! every command queued behind them), so each tail opens its own connection. On one
//! server a single `XREAD` covers every partition; on a Redis Cluster a multi-key command
//! must stay in one slot, so each partition gets its own reader task and connection
//! (partition order is per partition anyway). A background task reads batches and feeds a
//! bounded channel; when
//! the consumer is slow the channel fills and the task waits (backpressure), and when the
//! consumer drops the stream the task ends. Connection errors are yielded once and the
//! task reconnects, continuing from the last delivered position, so nothing is skipped.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use tokio::sync::mpsc;

use super::{decode_entry, map_redis_error, RedisConn, RedisStore};
use crate::error::StoreError;
use crate::position::Cursor;
use crate::store::EventStream;

const BLOCK_MS: u64 = 1000;
const BATCH: usize = 1000;

pub(super) async fn spawn(store: RedisStore, from: Cursor) -> Result<EventStream, StoreError> {
    let (tx, mut rx) = mpsc::channel(4 * BATCH);
    let all: Vec<u32> = (0..from.partitions()).collect();
    let groups: Vec<Vec<u32>> = if store.is_cluster() {
        all.into_iter().map(|p| vec![p]).collect()
    } else {
        vec![all]
    };
    // Connect up front (all readers at once) so a bad URL surfaces to the caller instead
    // of the stream, and the readers start together.
    let conns = futures::future::try_join_all(groups.iter().map(|_| connect(&store))).await?;
    for (partitions, conn) in groups.into_iter().zip(conns) {
        tokio::spawn(run(
            store.clone(),
            from.clone(),
            partitions,
            conn,
            tx.clone(),
        ));
    }
    // A corrupt entry ends the whole stream, as on one server: on a cluster its reader
    // stops there, and the other partitions' readers must not carry on as if the live
    // feed were whole.
    let mut ended = false;
    Ok(Box::pin(futures::stream::poll_fn(move |cx| {
        if ended {
            return std::task::Poll::Ready(None);
        }
        let item = rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(Err(StoreError::Decode(_)))) = &item {
            ended = true;
            rx.close();
        }
        item
    })))
}

async fn connect(store: &RedisStore) -> Result<RedisConn, StoreError> {
    store
        .dedicated_connection(Duration::from_millis(BLOCK_MS))
        .await
}

async fn run(
    store: RedisStore,
    mut cursor: Cursor,
    partitions: Vec<u32>,
    conn: RedisConn,
    tx: mpsc::Sender<Result<crate::envelope::RecordedEvent, StoreError>>,
) {
    let logs: Vec<String> = partitions.iter().map(|p| store.keys().log(*p)).collect();
    let by_key: HashMap<&str, u32> = logs
        .iter()
        .zip(&partitions)
        .map(|(k, p)| (k.as_str(), *p))
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
        for p in &partitions {
            cmd.arg(cursor.after(*p).to_string());
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

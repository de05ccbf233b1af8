//! Rebuild and verify of the `redis` read model.
//!
//! **Rebuild** builds a new key generation beside the live keys, under the shadow
//! namespace `<rm>:rebuild` (with its own checkpoints, so a crashed rebuild resumes), follows
//! the log while appends continue, and swaps with one script that `RENAME`s every shadow key
//! over its live counterpart, checkpoints included: readers see the old model or the new
//! one, never a mix. The script swaps only when the shadow's checkpoint is at or past the
//! live one in every partition (else the shadow catches up and tries again), so the new
//! generation holds everything the live one did — shared keys such as `jobs:pending` are
//! replaced whole, so this matters — and the live worker needs no pause: it continues from
//! the swapped-in checkpoints. Live keys the new generation does not have (only possible
//! with `--from` later than the start) are left as they are.
//!
//! **Verify** replays the log into a scratch namespace `<rm>:verify` up to the live
//! checkpoints and compares every key of both, returning the first differences.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;

use jobsource_eventstore::redis::RedisConn;
use jobsource_eventstore::{Cursor, EventStore};

use super::model::{RedisReadModel, RmKeys};
use crate::error::ProjectionError;
use crate::rebuild::{Difference, Progress};

fn redis_err(e: redis::RedisError) -> ProjectionError {
    ProjectionError::Redis(e)
}

/// The shadow namespace of read-model namespace `rm`.
pub fn shadow_namespace(rm: &str) -> String {
    RmKeys::new(rm).key("rebuild")
}

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

/// Every key under namespace `ns` (`<ns>:*`), from every master on a cluster.
async fn keys_under(conn: &mut RedisConn, ns: &str) -> Result<Vec<String>, ProjectionError> {
    let pattern = format!("{}:*", glob_escape(ns));
    conn.scan_match(&pattern).await.map_err(redis_err)
}

async fn delete_namespace(conn: &mut RedisConn, ns: &str) -> Result<(), ProjectionError> {
    for chunk in keys_under(conn, ns).await?.chunks(500) {
        redis::cmd("UNLINK")
            .arg(chunk)
            .query_async::<()>(conn)
            .await
            .map_err(redis_err)?;
    }
    Ok(())
}

/// Whether a rebuild of the model under `rm` is in progress (its shadow has checkpoints).
pub async fn is_rebuilding(conn: &RedisConn, rm: &str) -> Result<bool, ProjectionError> {
    let shadow = RmKeys::new(&shadow_namespace(rm));
    let mut conn = conn.clone();
    redis::cmd("EXISTS")
        .arg(shadow.checkpoint())
        .query_async(&mut conn)
        .await
        .map_err(redis_err)
}

/// Partitions applied at once: the client decodes and prepares some partitions' batches
/// while Redis runs another's script. Twice the PostgreSQL rebuild's count (which each
/// hold a pooled connection): each partition's loop waits on two round trips per batch
/// (read, script), and 8 measured 8-11 % faster than 4 on the 2-core box (BENCHMARKS.md).
pub const PARALLEL_PARTITIONS: usize = 8;

async fn catch_up_to(
    model: &RedisReadModel,
    store: &dyn EventStore,
    batch: usize,
    until: Option<&Cursor>,
    done: &AtomicU64,
    total: u64,
    progress: Progress<'_>,
) -> Result<u64, ProjectionError> {
    let per_partition = futures::stream::iter(0..store.partitions())
        .map(|p| async move {
            let mut applied = 0u64;
            loop {
                let n = model
                    .run_batch_until(store, p, batch, until.map(|c| c.after(p)))
                    .await? as u64;
                applied += n;
                let now = done.fetch_add(n, Ordering::Relaxed) + n;
                progress(now, total.max(now));
                if n < batch as u64 {
                    return Ok::<u64, ProjectionError>(applied);
                }
            }
        })
        .buffer_unordered(PARALLEL_PARTITIONS)
        .collect::<Vec<_>>()
        .await;
    per_partition.into_iter().sum()
}

/// Rebuilds the model under `rm` from `from` (or resumes an unfinished rebuild when `None`),
/// then swaps it in. Returns the number of events applied to the new generation.
pub async fn rebuild(
    store: &dyn EventStore,
    conn: RedisConn,
    rm: &str,
    from: Option<Cursor>,
    batch: usize,
    progress: Progress<'_>,
) -> Result<u64, ProjectionError> {
    let shadow_ns = shadow_namespace(rm);
    let shadow = RedisReadModel::new(conn.clone(), &shadow_ns);
    let mut c = conn.clone();
    let resuming = from.is_none() && is_rebuilding(&conn, rm).await?;
    if !resuming {
        delete_namespace(&mut c, &shadow_ns).await?;
        let start = from.unwrap_or_else(|| Cursor::start(store.partitions()));
        shadow.reset(&start).await?;
    }
    let mut total = 0;
    for p in 0..store.partitions() {
        total += store.partition_len(p).await?;
    }
    let done = AtomicU64::new(0);
    // Follow the log until a pass finds (almost) nothing new, then swap; the swap refuses
    // while the live model is ahead (it applied events the shadow has not seen yet).
    loop {
        let n = catch_up_to(&shadow, store, batch, None, &done, total, progress).await?;
        if n >= batch as u64 {
            continue;
        }
        if swap(&mut c, &shadow_ns, rm, store.partitions()).await? {
            return Ok(done.load(Ordering::Relaxed));
        }
    }
}

/// Swaps only when the shadow's checkpoint is at or past the live one in every partition
/// (so nothing the live model holds is missing from the new generation), renaming every
/// shadow key over its live counterpart; returns 0 (and renames nothing) otherwise.
/// KEYS: live checkpoint, shadow checkpoint, then (shadow key, live key) pairs.
/// ARGV: partition count.
const SWAP: &str = r"
local function behind(a, b)
  if not b then return false end
  if not a then return true end
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
for p = 0, tonumber(ARGV[1]) - 1 do
  local live = redis.call('HGET', KEYS[1], p)
  local shadow = redis.call('HGET', KEYS[2], p)
  if behind(shadow or '0-0', live) then return 0 end
end
for i = 3, #KEYS, 2 do
  redis.call('RENAME', KEYS[i], KEYS[i + 1])
end
return 1
";

/// Tries the swap once; `false` when the live model is ahead of the shadow.
async fn swap(
    conn: &mut RedisConn,
    shadow_ns: &str,
    rm: &str,
    partitions: u32,
) -> Result<bool, ProjectionError> {
    let live = RmKeys::new(rm);
    let shadow = RmKeys::new(shadow_ns);
    let strip = format!("{shadow_ns}:");
    let keys = keys_under(conn, shadow_ns).await?;
    let script = redis::Script::new(SWAP);
    let mut inv = script.prepare_invoke();
    inv.key(live.checkpoint()).key(shadow.checkpoint());
    for k in &keys {
        if let Some(suffix) = k.strip_prefix(&strip) {
            inv.key(k).key(live.key(suffix));
        }
    }
    inv.arg(partitions);
    let swapped: i64 = inv.invoke_async(conn).await.map_err(redis_err)?;
    if swapped == 1 {
        tracing::info!(keys = keys.len(), rm, "redis read model swapped in");
    }
    Ok(swapped == 1)
}

/// A key's content in a comparable form.
async fn dump(conn: &mut RedisConn, key: &str) -> Result<String, ProjectionError> {
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(redis_err)?;
    let value = match kind.as_str() {
        "hash" => {
            let m: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(conn)
                .await
                .map_err(redis_err)?;
            format!("{m:?}")
        }
        "set" => {
            let mut m: Vec<String> = redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(conn)
                .await
                .map_err(redis_err)?;
            m.sort();
            format!("{m:?}")
        }
        "zset" => {
            let m: Vec<(String, String)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await
                .map_err(redis_err)?;
            format!("{m:?}")
        }
        other => format!("<{other}>"),
    };
    Ok(format!("{kind} {value}"))
}

/// Replays the log into `<rm>:verify` up to the live checkpoints and compares every key
/// with the live model; returns up to `limit` differences (empty: equal).
pub async fn verify(
    store: &dyn EventStore,
    conn: RedisConn,
    rm: &str,
    batch: usize,
    limit: usize,
) -> Result<Vec<Difference>, ProjectionError> {
    let live = RedisReadModel::new(conn.clone(), rm);
    let scratch_ns = RmKeys::new(rm).key("verify");
    let scratch = RedisReadModel::new(conn.clone(), &scratch_ns);
    let mut c = conn.clone();
    delete_namespace(&mut c, &scratch_ns).await?;
    let mut ids = Vec::new();
    for p in 0..store.partitions() {
        ids.push(live.checkpoint(p).await?);
    }
    let until = Cursor::from_ids(ids);
    scratch.reset(&Cursor::start(store.partitions())).await?;
    let quiet: Progress<'_> = &|_, _| {};
    let done = AtomicU64::new(0);
    catch_up_to(&scratch, store, batch, Some(&until), &done, 0, quiet).await?;
    let strip = format!("{scratch_ns}:");
    let mut diffs = Vec::new();
    let mut expected_live = std::collections::HashSet::new();
    let skip = |suffix: &str| suffix.starts_with("projection:redis:");
    for k in keys_under(&mut c, &scratch_ns).await? {
        let Some(suffix) = k.strip_prefix(&strip).map(str::to_owned) else {
            continue;
        };
        if skip(&suffix) {
            continue;
        }
        let live_key = live.keys().key(&suffix);
        let (want, got) = (dump(&mut c, &k).await?, dump(&mut c, &live_key).await?);
        if want != got && diffs.len() < limit {
            diffs.push(Difference {
                table: live_key.clone(),
                kind: "differs",
                row: format!("expected {want}, live {got}"),
            });
        }
        expected_live.insert(live_key);
    }
    // Live entity keys the replay does not produce.
    if !rm.is_empty() {
        let shadow_ns = shadow_namespace(rm);
        for k in keys_under(&mut c, rm).await? {
            let internal = k.starts_with(&strip)
                || k.starts_with(&format!("{shadow_ns}:"))
                || k.starts_with(&format!("{rm}:projection:"))
                || !(k.starts_with(&format!("{rm}:job"))
                    || k.starts_with(&format!("{rm}:workflow")));
            if !internal && !expected_live.contains(&k) && diffs.len() < limit {
                diffs.push(Difference {
                    table: k.clone(),
                    kind: "unexpected",
                    row: dump(&mut c, &k).await?,
                });
            }
        }
    }
    delete_namespace(&mut c, &scratch_ns).await?;
    Ok(diffs)
}

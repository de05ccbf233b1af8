//! Long-running worker for the `redis` read model: the same contract as the PostgreSQL
//! worker (catch up, follow the live tail, bounded retries then `stalled` with error and
//! position, outages waited out), with its state kept in Redis next to its checkpoints:
//! `<rm>:projection:redis:state`, field = partition, value = `stalled\n<position>\n<error>`.

use std::sync::Arc;
use std::time::Duration;

use jobsource_eventstore::EventStore;
use redis::AsyncCommands;
use tokio::sync::watch;

use crate::error::ProjectionError;
use crate::redis_model::RedisReadModel;
use crate::worker::WorkerConfig;

fn state_key(model: &RedisReadModel) -> String {
    model.keys().key("projection:redis:state")
}

fn redis_err(e: redis::RedisError) -> ProjectionError {
    ProjectionError::Redis(e)
}

/// The stall recorded for `partition`, if any: (position, error).
pub async fn stalled(
    model: &RedisReadModel,
    partition: u32,
) -> Result<Option<(String, String)>, ProjectionError> {
    let mut conn = model.connection();
    let v: Option<String> = conn
        .hget(state_key(model), partition)
        .await
        .map_err(redis_err)?;
    Ok(v.and_then(|s| {
        let mut it = s.splitn(3, '\n');
        match (it.next(), it.next(), it.next()) {
            (Some("stalled"), Some(p), Some(e)) => Some((p.to_owned(), e.to_owned())),
            _ => None,
        }
    }))
}

/// Clears every stall of the model (after the cause is fixed).
pub async fn resume(model: &RedisReadModel) -> Result<(), ProjectionError> {
    let mut conn = model.connection();
    conn.del::<_, ()>(state_key(model)).await.map_err(redis_err)
}

/// Partitions worked on at once: round trips to Redis overlap, which keeps the delay from
/// an append to its visibility in the model short.
const PARALLEL_PARTITIONS: usize = 8;

/// Runs the model until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn EventStore>,
    model: Arc<RedisReadModel>,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    use futures::StreamExt;
    let mut tail = store.tail(store.head().await?).await?;
    while !*shutdown.borrow() {
        let progressed = futures::stream::iter(0..store.partitions())
            .map(|p| partition_pass(&*store, &model, p, &config))
            .buffer_unordered(PARALLEL_PARTITIONS)
            // Every partition's pass runs to its end (no short-circuit: a dropped pass
            // would just be redone, but it would delay that partition for a round).
            .fold(false, |any, progressed| async move { any || progressed })
            .await;
        if !progressed {
            crate::runtime::wait_for_append(
                &*store,
                &mut tail,
                &mut shutdown,
                Duration::from_secs(1),
            )
            .await;
        }
    }
    Ok(())
}

/// One batch of partition `p` (with bounded retries, then a recorded stall); returns
/// whether it applied anything.
async fn partition_pass(
    store: &dyn EventStore,
    model: &RedisReadModel,
    p: u32,
    config: &WorkerConfig,
) -> bool {
    match stalled(model, p).await {
        Ok(Some(_)) => return false,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "redis read model state unavailable; waiting");
            tokio::time::sleep(config.backoff).await;
            return false;
        }
    }
    let mut delay = config.backoff;
    let mut attempt = 1;
    loop {
        let started = std::time::Instant::now();
        match model.run_batch(store, p, config.batch).await {
            Ok(n) => {
                if n > 0 {
                    metrics::histogram!(crate::worker::BATCH_DURATION, "projection" => "redis")
                        .record(started.elapsed());
                }
                return n > 0;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(partition = p, error = %e, "backend unavailable; waiting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) if attempt < config.max_attempts => {
                tracing::warn!(partition = p, attempt, error = %e, "batch failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                let at = match &e {
                    ProjectionError::Apply { position, .. } => position.clone(),
                    _ => String::new(),
                };
                tracing::error!(partition = p, error = %e, position = %at,
                    "redis read model stalled");
                let mut conn = model.connection();
                let _: Result<(), _> = conn
                    .hset(state_key(model), p, format!("stalled\n{at}\n{e}"))
                    .await;
                return false;
            }
        }
    }
}

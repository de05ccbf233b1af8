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

/// Runs the model until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn EventStore>,
    model: Arc<RedisReadModel>,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let mut tail = store.tail(store.head().await?).await?;
    while !*shutdown.borrow() {
        let mut progressed = false;
        for p in 0..store.partitions() {
            match stalled(&model, p).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "redis read model state unavailable; waiting");
                    tokio::time::sleep(config.backoff).await;
                    continue;
                }
            }
            let mut delay = config.backoff;
            let mut attempt = 1;
            loop {
                let started = std::time::Instant::now();
                match model.run_batch(&*store, p, config.batch).await {
                    Ok(n) => {
                        if n > 0 {
                            metrics::histogram!(crate::worker::BATCH_DURATION, "projection" => "redis")
                                .record(started.elapsed());
                        }
                        progressed |= n > 0;
                        break;
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
                            .hset(state_key(&model), p, format!("stalled\n{at}\n{e}"))
                            .await;
                        break;
                    }
                }
            }
        }
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

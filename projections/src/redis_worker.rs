//! Long-running worker for the `redis` read model, on the subscriber runtime: the same
//! contract as the PostgreSQL worker (catch up, follow the live tail, bounded retries then `stalled` with error and
//! position, outages waited out), with its state kept in Redis next to its checkpoints:
//! `<rm>:projection:redis:state`, field = partition, value = `stalled\n<position>\n<error>`.

use std::sync::Arc;

use jobsource_eventstore::EventStore;
use redis::AsyncCommands;
use tokio::sync::watch;

use crate::error::ProjectionError;
use crate::redis_model::RedisReadModel;
use crate::subscriber::redis::{parse, RedisModelHandler, RedisStatusStore};
use crate::subscriber::{Recorded, Subscriber};
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
    Ok(v.and_then(|s| match parse(&s) {
        Recorded::Stalled { error, position } => Some((position.unwrap_or_default(), error)),
        _ => None,
    }))
}

/// Clears every stall of the model (after the cause is fixed).
pub async fn resume(model: &RedisReadModel) -> Result<(), ProjectionError> {
    let mut conn = model.connection();
    conn.del::<_, ()>(state_key(model)).await.map_err(redis_err)
}

/// Partitions worked on at once: round trips to Redis overlap, which keeps the delay from
/// an append to its visibility in the model short.
pub const PARALLEL_PARTITIONS: usize = 8;

/// Runs the model on the subscriber runtime until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn EventStore>,
    model: Arc<RedisReadModel>,
    config: WorkerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let subscriber = Arc::new(Subscriber::new(
        Arc::new(RedisModelHandler::new(model.clone())),
        store,
        Arc::new(RedisStatusStore::for_model(&model)),
        config.subscriber(PARALLEL_PARTITIONS),
    ));
    subscriber.run(shutdown).await;
    Ok(())
}

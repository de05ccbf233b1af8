//! The rebuildable read models by name, in one place: what each one owns (tables or
//! keys), how it is rebuilt beside the live model and swapped in, and how it is verified
//! against a recomputation. The consumer registry, the API's background rebuilds and the
//! CLI all take them from [`durable`].

use std::sync::Arc;

use async_trait::async_trait;
use jobsource_eventstore::redis::RedisConn;
use jobsource_eventstore::{Cursor, EventStore};
use sqlx::PgPool;

use crate::error::ProjectionError;
use crate::rebuild::{Difference, Progress};
use crate::runtime::PgProjection;
use crate::{Archive, PostgresReadModel};

/// A read model that can be rebuilt and verified.
#[async_trait]
pub trait Rebuilder: Send + Sync + 'static {
    /// The projection's name (`archive`, `postgres`, `redis`).
    fn name(&self) -> &str;

    /// What it owns: its tables or its key namespace (shown by `projections status`).
    fn owns(&self) -> String;

    /// Builds the model again beside the live one from `from` (`None`: resume an
    /// unfinished rebuild, else from the start), catching up while appends continue, and
    /// swaps it in atomically; returns events applied. `progress(done, total)` is called
    /// along the way.
    async fn rebuild(
        &self,
        from: Option<Cursor>,
        batch: usize,
        progress: Progress<'_>,
    ) -> Result<u64, ProjectionError>;

    /// Recomputes the model up to the live checkpoints and diffs it with the live one;
    /// returns up to `limit` differences (empty: equal).
    async fn verify(&self, batch: usize, limit: usize) -> Result<Vec<Difference>, ProjectionError>;
}

/// A PostgreSQL projection: shadow schema, swap in one transaction.
pub struct PgRebuilder {
    store: Arc<dyn EventStore>,
    pool: PgPool,
    projection: Arc<dyn PgProjection>,
}

#[async_trait]
impl Rebuilder for PgRebuilder {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn owns(&self) -> String {
        format!(
            "tables {}",
            crate::rebuild::tables_of(self.projection.name()).join(", ")
        )
    }

    async fn rebuild(
        &self,
        from: Option<Cursor>,
        batch: usize,
        progress: Progress<'_>,
    ) -> Result<u64, ProjectionError> {
        crate::rebuild::rebuild(
            &*self.store,
            &self.pool,
            &*self.projection,
            from,
            batch,
            progress,
        )
        .await
    }

    async fn verify(&self, batch: usize, limit: usize) -> Result<Vec<Difference>, ProjectionError> {
        crate::rebuild::verify(&*self.store, &self.pool, &*self.projection, batch, limit).await
    }
}

/// The `redis` model: a new key generation, swapped in by one script.
pub struct RedisRebuilder {
    store: Arc<dyn EventStore>,
    conn: RedisConn,
    namespace: String,
}

#[async_trait]
impl Rebuilder for RedisRebuilder {
    fn name(&self) -> &str {
        "redis"
    }

    fn owns(&self) -> String {
        if self.namespace.is_empty() {
            "the seed's bare keys (job:<id>, workflow:<id>, jobs:*, machine:<id>, ...)".into()
        } else {
            format!("keys {}:*", self.namespace)
        }
    }

    async fn rebuild(
        &self,
        from: Option<Cursor>,
        batch: usize,
        progress: Progress<'_>,
    ) -> Result<u64, ProjectionError> {
        crate::redis::rebuild::rebuild(
            &*self.store,
            self.conn.clone(),
            &self.namespace,
            from,
            batch,
            progress,
        )
        .await
    }

    async fn verify(&self, batch: usize, limit: usize) -> Result<Vec<Difference>, ProjectionError> {
        crate::redis::rebuild::verify(
            &*self.store,
            self.conn.clone(),
            &self.namespace,
            batch,
            limit,
        )
        .await
    }
}

/// The durable deployment's rebuildable models: `archive` and `postgres` when `pool` is
/// given, and `redis` (namespace `rm`) when `conn` is.
pub fn durable(
    store: &Arc<dyn EventStore>,
    pool: Option<&PgPool>,
    redis: Option<(RedisConn, &str)>,
) -> Vec<Arc<dyn Rebuilder>> {
    let mut out: Vec<Arc<dyn Rebuilder>> = Vec::new();
    if let Some(pool) = pool {
        let pg: [Arc<dyn PgProjection>; 2] = [Arc::new(Archive), Arc::new(PostgresReadModel)];
        for projection in pg {
            out.push(Arc::new(PgRebuilder {
                store: store.clone(),
                pool: pool.clone(),
                projection,
            }));
        }
    }
    if let Some((conn, rm)) = redis {
        out.push(Arc::new(RedisRebuilder {
            store: store.clone(),
            conn,
            namespace: rm.to_owned(),
        }));
    }
    out
}

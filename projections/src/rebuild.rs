//! Rebuild and verify of the PostgreSQL projections, beside the live model.
//!
//! A rebuild creates the projection's tables again in a shadow schema
//! (`rebuild_<projection>`, `CREATE TABLE ... (LIKE live INCLUDING ALL)`), replays the log
//! into them under the checkpoint name `<projection>@rebuild` (batches run with
//! `SET LOCAL search_path` pointing at the shadow schema) and catches up to the head while
//! appends continue. The swap is one transaction: it locks the live checkpoint rows (the
//! live worker's next batch waits), drops the live tables, moves the shadow tables into
//! `public` and hands the rebuild's checkpoints to the live projection, which then goes on
//! from there. Readers see the old tables or the new ones, never a half-built model. A
//! crashed rebuild resumes from its own checkpoints when started again.
//!
//! Verify replays the log into a scratch schema up to the live checkpoints and diffs every
//! table row by row against the live one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use jobsource_eventstore::{Cursor, EventStore, RecordedEvent};
use sqlx::{PgPool, Postgres, Transaction};

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::readahead;
use crate::runtime::{run_batch_until, PgProjection};

/// Partitions a rebuild drains at once (each needs one pooled connection while it writes):
/// while one partition's batch is in PostgreSQL, the others read or prepare theirs.
pub const PARALLEL_PARTITIONS: usize = 4;

/// The live tables of a PostgreSQL projection.
pub fn tables_of(projection: &str) -> &'static [&'static str] {
    match projection {
        "archive" => &["events"],
        "postgres" => &["jobs", "workflows", "workflow_steps", "machines"],
        _ => &[],
    }
}

/// Runs a projection against tables of another schema, under another checkpoint name.
struct InSchema<'a> {
    inner: &'a dyn PgProjection,
    schema: String,
    name: String,
}

#[async_trait]
impl PgProjection for InSchema<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        sqlx::query(&format!("SET LOCAL search_path TO {}, public", self.schema))
            .execute(&mut **tx)
            .await?;
        self.inner.apply(tx, events).await
    }
}

/// Progress callback: (events done so far, events in the log when the run started).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

async fn log_len(store: &dyn EventStore) -> Result<u64, ProjectionError> {
    let mut total = 0;
    for p in 0..store.partitions() {
        total += store.partition_len(p).await?;
    }
    Ok(total)
}

/// Creates `schema` with empty copies of the projection's live tables (if missing).
async fn create_shadow(
    pool: &PgPool,
    schema: &str,
    tables: &[&str],
) -> Result<bool, ProjectionError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)",
    )
    .bind(schema)
    .fetch_one(pool)
    .await?;
    if exists {
        return Ok(false);
    }
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    for t in tables {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{t} (LIKE public.{t} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Rebuilds `projection` beside the live model and swaps it in; returns events applied.
///
/// `from` restarts the rebuild from that offset (dropping an unfinished one); without it
/// an unfinished rebuild resumes and a new one starts at the beginning of the log.
pub async fn rebuild(
    store: &dyn EventStore,
    pool: &PgPool,
    projection: &dyn PgProjection,
    from: Option<Cursor>,
    batch: usize,
    progress: Progress<'_>,
) -> Result<u64, ProjectionError> {
    let live = projection.name().to_owned();
    let tables = tables_of(&live);
    let schema = format!("rebuild_{live}");
    let shadow = InSchema {
        inner: projection,
        schema: schema.clone(),
        name: format!("{live}@rebuild"),
    };
    if from.is_some() {
        drop_shadow(pool, &schema, &shadow.name).await?;
    }
    let fresh = create_shadow(pool, &schema, tables).await?;
    if fresh {
        let start = from.unwrap_or_else(|| Cursor::start(store.partitions()));
        checkpoint::reset(pool, &shadow.name, &start).await?;
    }
    // Status shows the shadow's partitions as `rebuilding` until the swap.
    sqlx::query("UPDATE projection_checkpoints SET state = 'rebuilding' WHERE projection = $1")
        .bind(&shadow.name)
        .execute(pool)
        .await?;
    let total = log_len(store).await?;
    let done = AtomicU64::new(0);
    let report = |k: u64| {
        let now = done.fetch_add(k, Ordering::Relaxed) + k;
        progress(now, total.max(now));
    };
    // Catch up to the head; appends may continue meanwhile, the loop follows them.
    loop {
        let head = store.head().await?;
        let shadow = &shadow;
        let report = &report;
        let per_partition: Vec<Result<u64, ProjectionError>> =
            futures::stream::iter(0..store.partitions())
                .map(|p| {
                    let until = head.after(p);
                    async move {
                        readahead::drain_until(store, pool, shadow, p, batch, until, report).await
                    }
                })
                .buffer_unordered(PARALLEL_PARTITIONS)
                .collect()
                .await;
        let n = per_partition
            .into_iter()
            .sum::<Result<u64, ProjectionError>>()?;
        if n == 0 {
            break;
        }
    }
    swap(pool, &live, &schema, tables).await?;
    Ok(done.load(Ordering::Relaxed))
}

async fn drop_shadow(pool: &PgPool, schema: &str, name: &str) -> Result<(), ProjectionError> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// The atomic swap (see the module docs).
async fn swap(
    pool: &PgPool,
    live: &str,
    schema: &str,
    tables: &[&str],
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    // Pause the live projector: its batches lock these rows first.
    sqlx::query("SELECT partition FROM projection_checkpoints WHERE projection = $1 FOR UPDATE")
        .bind(live)
        .fetch_all(&mut *tx)
        .await?;
    for t in tables {
        sqlx::query(&format!("DROP TABLE IF EXISTS public.{t}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{t} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(live)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE projection_checkpoints SET projection = $1, state = 'running' WHERE projection = $2",
    )
        .bind(live)
        .bind(format!("{live}@rebuild"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DROP SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// One difference found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Table.
    pub table: String,
    /// `missing` (in the recomputed model, not live) or `unexpected` (live only).
    pub kind: &'static str,
    /// The row as JSON.
    pub row: String,
}

/// Recomputes `projection` from the log up to its live checkpoints and diffs every table
/// against the live one; returns up to `limit` differences (empty: equal).
pub async fn verify(
    store: &dyn EventStore,
    pool: &PgPool,
    projection: &dyn PgProjection,
    batch: usize,
    limit: usize,
) -> Result<Vec<Difference>, ProjectionError> {
    let live = projection.name().to_owned();
    let tables = tables_of(&live);
    let schema = format!("verify_{live}");
    let name = format!("{live}@verify");
    drop_shadow(pool, &schema, &name).await?;
    create_shadow(pool, &schema, tables).await?;
    checkpoint::reset(pool, &name, &Cursor::start(store.partitions())).await?;
    let target = live_cursor(pool, &live, store.partitions()).await?;
    let scratch = InSchema {
        inner: projection,
        schema: schema.clone(),
        name: name.clone(),
    };
    for p in 0..store.partitions() {
        while run_batch_until(store, pool, &scratch, p, batch, Some(target.after(p))).await?
            == batch
        {}
    }
    let mut diffs = Vec::new();
    for t in tables {
        for (kind, a, b) in [
            ("missing", schema.as_str(), "public"),
            ("unexpected", "public", schema.as_str()),
        ] {
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT to_jsonb(x)::text FROM (SELECT * FROM {a}.{t} EXCEPT SELECT * FROM {b}.{t}) x \
                 LIMIT {limit}"
            ))
            .fetch_all(pool)
            .await?;
            diffs.extend(rows.into_iter().map(|row| Difference {
                table: (*t).to_owned(),
                kind,
                row,
            }));
        }
    }
    drop_shadow(pool, &schema, &name).await?;
    diffs.truncate(limit);
    Ok(diffs)
}

async fn live_cursor(
    pool: &PgPool,
    live: &str,
    partitions: u32,
) -> Result<Cursor, ProjectionError> {
    let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT partition, log_ms, log_seq FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(live)
    .fetch_all(pool)
    .await?;
    let mut cursor = Cursor::start(partitions);
    for (p, ms, seq) in rows {
        cursor.advance(jobsource_eventstore::Position::new(
            p as u32,
            jobsource_eventstore::LogId::new(ms as u64, seq as u64),
        ));
    }
    Ok(cursor)
}

/// Events per second of a finished run (for reports).
pub fn rate(events: u64, since: Instant) -> f64 {
    events as f64 / since.elapsed().as_secs_f64().max(1e-9)
}

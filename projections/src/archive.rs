//! The `archive` projection: every envelope in the `events` table with its position,
//! queryable by stream, type, correlation id, causation id and time.
//!
//! A batch is written with one `INSERT ... SELECT FROM UNNEST(...)`; `ON CONFLICT
//! (event_id) DO NOTHING` makes a re-delivered event change nothing even outside the
//! checkpoint's protection (e.g. after a replay from an earlier offset).

use async_trait::async_trait;
use jobsource_eventstore::RecordedEvent;
use sqlx::{Postgres, Transaction};

use crate::error::ProjectionError;
use crate::runtime::PgProjection;

/// The archive projection.
#[derive(Debug, Clone, Default)]
pub struct Archive;

#[async_trait]
impl PgProjection for Archive {
    fn name(&self) -> &str {
        "archive"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let n = events.len();
        let mut ids = Vec::with_capacity(n);
        let mut streams = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut schemas = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut correlations = Vec::with_capacity(n);
        let mut causations: Vec<Option<String>> = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut data = Vec::with_capacity(n);
        let mut partitions = Vec::with_capacity(n);
        let mut ms = Vec::with_capacity(n);
        let mut seqs = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for e in events {
            let env = &e.envelope;
            ids.push(env.event_id);
            streams.push(env.stream.clone());
            versions.push(env.version as i64);
            types.push(env.event_type.clone());
            schemas.push(env.schema as i32);
            times.push(env.occurred_at);
            correlations.push(env.correlation_id.clone());
            causations.push(env.causation_id.clone());
            metadata.push(serde_json::Value::Object(env.metadata.clone()));
            // The payload goes over as its JSON text; PostgreSQL parses it into jsonb.
            data.push(env.data.get());
            partitions.push(e.position.partition as i32);
            ms.push(e.position.id.ms as i64);
            seqs.push(e.position.id.seq as i64);
            positions.push(e.position.to_string());
        }
        sqlx::query(
            "INSERT INTO events (event_id, stream, version, type, schema, occurred_at, \
             correlation_id, causation_id, metadata, data, partition, log_ms, log_seq, position) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int4[], \
             $6::timestamptz[], $7::text[], $8::text[], $9::jsonb[], $10::text[]::jsonb[], $11::int4[], \
             $12::int8[], $13::int8[], $14::text[]) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&streams)
        .bind(&versions)
        .bind(&types)
        .bind(&schemas)
        .bind(&times)
        .bind(&correlations)
        .bind(&causations)
        .bind(&metadata)
        .bind(&data)
        .bind(&partitions)
        .bind(&ms)
        .bind(&seqs)
        .bind(&positions)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

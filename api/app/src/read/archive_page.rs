//! `GET /v1/events` in the durable deployment: pages from the PostgreSQL archive, then the
//! live log for what the archive has not reached yet.
//!
//! The archive answers filters with its indexes (type, correlation id, stream) instead of a
//! scan. A page takes the archived events after the cursor (per partition) in global order;
//! when they do not fill it, the archive has nothing more after the cursor up to its own
//! checkpoints, so the cursor moves to those checkpoints and the rest of the page comes
//! from the partition logs ([`super::events::page`]). Within each partition a page
//! is always a prefix of what follows the cursor, so paging never skips or repeats an event.

use jobsource_eventstore::{Cursor, Envelope, EventStore, LogId, Position, RecordedEvent};
use sqlx::{PgPool, Row};

use super::events::{page as log_page, EventFilter, EventPage};
use super::QueryError;

/// Log entries the live-log part of a page may scan.
const SCAN_BUDGET: usize = 20_000;

/// A type glob (`job_*`) as a SQL `LIKE` pattern (escape character `\`).
fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out
}

/// The archive's checkpoint per partition.
async fn archive_checkpoints(pool: &PgPool, partitions: u32) -> Result<Cursor, QueryError> {
    let rows = sqlx::query(
        "SELECT partition, log_ms, log_seq FROM projection_checkpoints WHERE projection = 'archive'",
    )
    .fetch_all(pool)
    .await?;
    let mut ids = vec![LogId::ZERO; partitions as usize];
    for r in rows {
        let p: i32 = r.try_get("partition")?;
        let (ms, seq): (i64, i64) = (r.try_get("log_ms")?, r.try_get("log_seq")?);
        if let Some(slot) = ids.get_mut(p as usize) {
            *slot = LogId::new(ms as u64, seq as u64);
        }
    }
    Ok(Cursor::from_ids(ids))
}

/// One page after `after`.
pub async fn page(
    store: &dyn EventStore,
    pool: &PgPool,
    after: Cursor,
    filter: &EventFilter,
    limit: usize,
) -> Result<EventPage, QueryError> {
    let partitions = store.partitions();
    let archived = archive_checkpoints(pool, partitions).await?;
    let (ps, ms, seqs): (Vec<i32>, Vec<i64>, Vec<i64>) = {
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        for p in 0..partitions {
            let id = after.after(p);
            out.0.push(p as i32);
            out.1.push(id.ms as i64);
            out.2.push(id.seq as i64);
        }
        out
    };
    let rows = sqlx::query(
        "SELECT e.event_id, e.stream, e.version, e.type, e.schema, e.occurred_at, \
           e.correlation_id, e.causation_id, e.metadata, e.data, e.partition, e.log_ms, e.log_seq \
         FROM events e \
         JOIN UNNEST($1::int4[], $2::int8[], $3::int8[]) AS c(p, ms, seq) \
           ON e.partition = c.p AND (e.log_ms, e.log_seq) > (c.ms, c.seq) \
         WHERE ($4::text IS NULL OR e.type LIKE $4 ESCAPE '\\') \
           AND ($5::text IS NULL OR e.stream = $5) \
           AND ($6::text IS NULL OR e.correlation_id = $6) \
         ORDER BY e.log_ms, e.log_seq, e.partition \
         LIMIT $7",
    )
    .bind(&ps)
    .bind(&ms)
    .bind(&seqs)
    .bind(filter.types.as_deref().map(like_pattern))
    .bind(filter.stream.as_deref())
    .bind(filter.correlation_id.as_deref())
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    let mut next = after;
    let mut events = Vec::with_capacity(rows.len());
    for r in rows {
        let partition: i32 = r.try_get("partition")?;
        let id = LogId::new(
            r.try_get::<i64, _>("log_ms")? as u64,
            r.try_get::<i64, _>("log_seq")? as u64,
        );
        let position = Position::new(partition as u32, id);
        next.advance(position);
        events.push(RecordedEvent {
            position,
            envelope: Envelope {
                event_id: r.try_get("event_id")?,
                stream: r.try_get("stream")?,
                version: r.try_get::<i64, _>("version")? as u64,
                event_type: r.try_get("type")?,
                schema: r.try_get::<i32, _>("schema")? as u32,
                occurred_at: r.try_get("occurred_at")?,
                correlation_id: r.try_get("correlation_id")?,
                causation_id: r.try_get("causation_id")?,
                metadata: match r.try_get("metadata")? {
                    serde_json::Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                },
                data: r
                    .try_get::<&serde_json::value::RawValue, _>("data")?
                    .to_owned()
                    .into(),
            },
        });
    }
    if events.len() == limit {
        return Ok(EventPage {
            events,
            next,
            more: true,
        });
    }
    // The archive holds nothing more after the cursor up to its checkpoints: continue from
    // there in the live log.
    for p in 0..partitions {
        next.advance(Position::new(p, archived.after(p)));
    }
    let rest = log_page(store, next, filter, limit - events.len(), SCAN_BUDGET).await?;
    events.extend(rest.events);
    Ok(EventPage {
        events,
        next: rest.next,
        more: rest.more,
    })
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(like_pattern("job_*"), "job\\_%");
        assert_eq!(like_pattern("*"), "%");
        assert_eq!(like_pattern("a%b"), "a\\%b");
    }
}

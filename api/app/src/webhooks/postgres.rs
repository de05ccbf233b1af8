//! Full mode: the `webhooks` projection and the delivery records in PostgreSQL
//! (`webhook_deliveries`, `webhook_attempts`; migration 0004).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsource_eventstore::{EventStore, RecordedEvent};
use jobsource_projections::{PgProjection, ProjectionError};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{
    AttemptResult, AttemptView, Claimed, Delivery, DeliveryQuery, DeliveryStatus, DeliveryStore,
    NewDelivery, Next, Requeue, PROJECTION,
};
use crate::read::view::timestamp;
use crate::read::Page;
use crate::service::ServiceError;

/// The enqueue step as a PostgreSQL projection: the planned deliveries of a batch are
/// inserted in the batch's transaction, beside its checkpoint.
pub struct WebhookProjection {
    store: Arc<dyn EventStore>,
}

impl WebhookProjection {
    /// The projection, reading each target stream's history (for `webhook_url` and the
    /// body's seed fields) from `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        WebhookProjection { store }
    }
}

#[async_trait]
impl PgProjection for WebhookProjection {
    fn name(&self) -> &str {
        PROJECTION
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let deliveries = super::plan(&*self.store, events).await?;
        if !deliveries.is_empty() {
            insert(tx, deliveries).await?;
        }
        Ok(())
    }
}

/// Inserts deliveries, leaving existing ones (same id, or same event and url) alone.
async fn insert(conn: &mut PgConnection, deliveries: Vec<NewDelivery>) -> Result<u64, sqlx::Error> {
    let n = deliveries.len();
    let mut ids = Vec::with_capacity(n);
    let mut event_ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut streams = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut urls = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    for d in deliveries {
        ids.push(d.id);
        event_ids.push(d.event_id);
        types.push(d.event_type);
        streams.push(d.stream);
        positions.push(d.position);
        urls.push(d.url);
        payloads.push(d.payload);
    }
    Ok(sqlx::query(
        "INSERT INTO webhook_deliveries (id, event_id, event_type, stream, position, url, payload) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::jsonb[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&types)
    .bind(&streams)
    .bind(&positions)
    .bind(&urls)
    .bind(&payloads)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Delivery records in PostgreSQL.
#[derive(Clone)]
pub struct PgDeliveryStore {
    pool: PgPool,
}

impl PgDeliveryStore {
    /// Records in the database of `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        PgDeliveryStore { pool }
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    event_id: Uuid,
    event_type: String,
    stream: String,
    position: String,
    url: String,
    payload: Value,
    status: String,
    attempts: i32,
    requeues: i32,
    next_attempt_at: DateTime<Utc>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    delivery_id: Uuid,
    attempt: i32,
    attempted_at: DateTime<Utc>,
    duration_ms: i64,
    status_code: Option<i32>,
    error: Option<String>,
    outcome: String,
}

const COLUMNS: &str = "id, event_id, event_type, stream, position, url, payload, status, \
    attempts, requeues, next_attempt_at, last_status_code, last_error, created_at, delivered_at";

fn code(c: Option<i32>) -> Option<u16> {
    c.and_then(|c| u16::try_from(c).ok())
}

impl DeliveryRow {
    fn view(self, attempt_history: Vec<AttemptView>) -> Delivery {
        let pending = self.status == DeliveryStatus::Pending.as_str();
        Delivery {
            id: self.id,
            event_id: self.event_id,
            event_type: self.event_type,
            stream: self.stream,
            position: self.position,
            url: self.url,
            status: self.status,
            attempts: self.attempts.max(0) as u32,
            requeues: self.requeues.max(0) as u32,
            next_attempt_at: pending.then(|| timestamp(self.next_attempt_at)),
            last_status_code: code(self.last_status_code),
            last_error: self.last_error,
            created_at: timestamp(self.created_at),
            delivered_at: self.delivered_at.map(timestamp),
            payload: self.payload,
            attempt_history,
        }
    }
}

impl AttemptRow {
    fn view(self) -> AttemptView {
        AttemptView {
            attempt: self.attempt.max(0) as u32,
            attempted_at: timestamp(self.attempted_at),
            duration_ms: self.duration_ms.max(0) as u64,
            status_code: code(self.status_code),
            error: self.error,
            outcome: self.outcome,
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl PgDeliveryStore {
    async fn with_attempts(&self, rows: Vec<DeliveryRow>) -> Result<Vec<Delivery>, ServiceError> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT delivery_id, attempt, attempted_at, duration_ms, status_code, error, outcome \
             FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt, id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut by_delivery: std::collections::HashMap<Uuid, Vec<AttemptView>> =
            std::collections::HashMap::new();
        for a in attempts {
            by_delivery.entry(a.delivery_id).or_default().push(a.view());
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let history = by_delivery.remove(&r.id).unwrap_or_default();
                r.view(history)
            })
            .collect())
    }
}

#[async_trait]
impl DeliveryStore for PgDeliveryStore {
    async fn insert(&self, deliveries: Vec<NewDelivery>) -> Result<u64, ServiceError> {
        let mut conn = self.pool.acquire().await?;
        Ok(insert(&mut conn, deliveries).await?)
    }

    async fn claim_due(&self, limit: usize, lease: Duration) -> Result<Vec<Claimed>, ServiceError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let token = Uuid::new_v4();
        let rows: Vec<(Uuid, String, String, Value, i32, i32)> = sqlx::query_as(
            "UPDATE webhook_deliveries d \
             SET next_attempt_at = now() + $2::float8 * interval '1 millisecond', lease_token = $3 \
             FROM (SELECT id FROM webhook_deliveries \
                   WHERE status = 'pending' AND next_attempt_at <= now() \
                   ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
             WHERE d.id = due.id \
             RETURNING d.id, d.url, d.event_type, d.payload, d.attempts, d.round_start",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(millis(lease))
        .bind(token)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, url, event_type, payload, attempts, round_start)| Claimed {
                    id,
                    url,
                    event_type,
                    payload,
                    attempt: attempts.max(0) as u32 + 1,
                    round_attempt: (attempts - round_start).max(0) as u32 + 1,
                    lease: token,
                },
            )
            .collect())
    }

    async fn record(
        &self,
        claimed: &Claimed,
        result: &AttemptResult,
        next: Next,
    ) -> Result<bool, ServiceError> {
        let (status, delay) = match next {
            Next::Delivered => (DeliveryStatus::Delivered, Duration::ZERO),
            Next::RetryIn(d) => (DeliveryStatus::Pending, d),
            Next::Dead => (DeliveryStatus::Dead, Duration::ZERO),
        };
        let status_code = result.status_code.map(i32::from);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts \
             (delivery_id, attempt, attempted_at, duration_ms, status_code, error, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(claimed.id)
        .bind(i32::try_from(claimed.attempt).unwrap_or(i32::MAX))
        .bind(result.attempted_at)
        .bind(i64::try_from(result.duration.as_millis()).unwrap_or(i64::MAX))
        .bind(status_code)
        .bind(result.error.as_deref())
        .bind(next.outcome())
        .execute(&mut *tx)
        .await?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $3, \
             last_status_code = $4, last_error = $5, lease_token = NULL, \
             next_attempt_at = CASE WHEN $3 = 'pending' \
                 THEN now() + $6::float8 * interval '1 millisecond' ELSE next_attempt_at END, \
             delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END \
             WHERE id = $1 AND lease_token = $2",
        )
        .bind(claimed.id)
        .bind(claimed.lease)
        .bind(status.as_str())
        .bind(status_code)
        .bind(result.error.as_deref())
        .bind(millis(delay))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn list(&self, query: &DeliveryQuery) -> Result<Page<Delivery>, ServiceError> {
        let limit = query.limit.max(1);
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries \
             WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(query.status.map(DeliveryStatus::as_str))
        .bind(query.after)
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut items = self.with_attempts(rows).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| d.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn get(&self, id: Uuid) -> Result<Option<Delivery>, ServiceError> {
        let row: Option<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(self.with_attempts(vec![row]).await?.pop()),
        }
    }

    async fn requeue(&self, id: Uuid) -> Result<Requeue, ServiceError> {
        let requeued = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), \
             round_start = attempts, requeues = requeues + 1, lease_token = NULL \
             WHERE id = $1 AND status = 'dead'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if requeued == 0 {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM webhook_deliveries WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            return Ok(match status {
                None => Requeue::NotFound,
                Some(s) => match s.parse() {
                    Ok(status) => Requeue::NotDead(status),
                    Err(e) => {
                        return Err(ServiceError::Internal(format!(
                            "delivery {id} has status {s:?}: {e}"
                        )))
                    }
                },
            });
        }
        match self.get(id).await? {
            Some(d) => Ok(Requeue::Requeued(Box::new(d))),
            None => Ok(Requeue::NotFound),
        }
    }

    async fn count(&self, status: DeliveryStatus) -> Result<u64, ServiceError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = $1")
                .bind(status.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok(n.max(0) as u64)
    }
}

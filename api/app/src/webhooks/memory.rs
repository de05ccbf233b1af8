//! Embedded mode: delivery records in memory, and the enqueue step as a subscriber over
//! the in-memory store with an in-memory checkpoint (both lost with the process, like the
//! store itself).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsource_eventstore::{EventStore, LogId, RecordedEvent};
use jobsource_projections::subscriber::{Handler, HandlerError, Outcome};
use uuid::Uuid;

use super::{
    AttemptResult, AttemptView, Claimed, Delivery, DeliveryQuery, DeliveryStatus, DeliveryStore,
    NewDelivery, Next, Requeue, PROJECTION,
};
use crate::read::view::timestamp;
use crate::read::Page;
use crate::service::ServiceError;

struct Row {
    new: NewDelivery,
    status: DeliveryStatus,
    attempts: u32,
    round_start: u32,
    requeues: u32,
    next_attempt_at: DateTime<Utc>,
    lease: Option<Uuid>,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    history: Vec<AttemptView>,
}

impl Row {
    fn view(&self) -> Delivery {
        Delivery {
            id: self.new.id,
            event_id: self.new.event_id,
            event_type: self.new.event_type.clone(),
            stream: self.new.stream.clone(),
            position: self.new.position.clone(),
            url: self.new.url.clone(),
            status: self.status.as_str().to_owned(),
            attempts: self.attempts,
            requeues: self.requeues,
            next_attempt_at: (self.status == DeliveryStatus::Pending)
                .then(|| timestamp(self.next_attempt_at)),
            last_status_code: self.last_status_code,
            last_error: self.last_error.clone(),
            created_at: timestamp(self.created_at),
            delivered_at: self.delivered_at.map(timestamp),
            payload: self.new.payload.clone(),
            attempt_history: self.history.clone(),
        }
    }
}

/// Delivery records in process memory.
#[derive(Default)]
pub struct MemoryDeliveryStore {
    rows: Mutex<BTreeMap<Uuid, Row>>,
}

impl MemoryDeliveryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryDeliveryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Uuid, Row>> {
        // Each operation completes its changes to one row before it can panic.
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn after(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl DeliveryStore for MemoryDeliveryStore {
    async fn insert(&self, deliveries: Vec<NewDelivery>) -> Result<u64, ServiceError> {
        let mut rows = self.lock();
        let mut created = 0;
        for d in deliveries {
            // The id is derived from (event id, url): same id = same event and url.
            if rows.contains_key(&d.id) {
                continue;
            }
            let now = Utc::now();
            rows.insert(
                d.id,
                Row {
                    new: d,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    round_start: 0,
                    requeues: 0,
                    next_attempt_at: now,
                    lease: None,
                    last_status_code: None,
                    last_error: None,
                    created_at: now,
                    delivered_at: None,
                    history: Vec::new(),
                },
            );
            created += 1;
        }
        Ok(created)
    }

    async fn claim_due(&self, limit: usize, lease: Duration) -> Result<Vec<Claimed>, ServiceError> {
        let mut rows = self.lock();
        let now = Utc::now();
        let mut due: Vec<&mut Row> = rows
            .values_mut()
            .filter(|r| r.status == DeliveryStatus::Pending && r.next_attempt_at <= now)
            .collect();
        due.sort_by_key(|r| r.next_attempt_at);
        let token = Uuid::new_v4();
        Ok(due
            .into_iter()
            .take(limit)
            .map(|r| {
                r.next_attempt_at = after(lease);
                r.lease = Some(token);
                Claimed {
                    id: r.new.id,
                    url: r.new.url.clone(),
                    event_type: r.new.event_type.clone(),
                    payload: r.new.payload.clone(),
                    attempt: r.attempts + 1,
                    round_attempt: r.attempts.saturating_sub(r.round_start) + 1,
                    lease: token,
                }
            })
            .collect())
    }

    async fn record(
        &self,
        claimed: &Claimed,
        result: &AttemptResult,
        next: Next,
    ) -> Result<bool, ServiceError> {
        let mut rows = self.lock();
        let Some(row) = rows.get_mut(&claimed.id) else {
            return Ok(false);
        };
        row.history.push(AttemptView {
            attempt: claimed.attempt,
            attempted_at: timestamp(result.attempted_at),
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            status_code: result.status_code,
            error: result.error.clone(),
            outcome: next.outcome().to_owned(),
        });
        if row.lease != Some(claimed.lease) {
            return Ok(false);
        }
        row.attempts += 1;
        row.lease = None;
        row.last_status_code = result.status_code;
        row.last_error = result.error.clone();
        match next {
            Next::Delivered => {
                row.status = DeliveryStatus::Delivered;
                row.delivered_at = Some(Utc::now());
            }
            Next::RetryIn(d) => {
                row.status = DeliveryStatus::Pending;
                row.next_attempt_at = after(d);
            }
            Next::Dead => row.status = DeliveryStatus::Dead,
        }
        Ok(true)
    }

    async fn list(&self, query: &DeliveryQuery) -> Result<Page<Delivery>, ServiceError> {
        let rows = self.lock();
        let limit = query.limit.max(1);
        let start = match query.after {
            Some(a) => std::ops::Bound::Excluded(a),
            None => std::ops::Bound::Unbounded,
        };
        let mut items: Vec<Delivery> = rows
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| query.status.is_none_or(|s| r.status == s))
            .take(limit + 1)
            .map(Row::view)
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| d.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn get(&self, id: Uuid) -> Result<Option<Delivery>, ServiceError> {
        Ok(self.lock().get(&id).map(Row::view))
    }

    async fn requeue(&self, id: Uuid) -> Result<Requeue, ServiceError> {
        let mut rows = self.lock();
        let Some(row) = rows.get_mut(&id) else {
            return Ok(Requeue::NotFound);
        };
        if row.status != DeliveryStatus::Dead {
            return Ok(Requeue::NotDead(row.status));
        }
        row.status = DeliveryStatus::Pending;
        row.next_attempt_at = Utc::now();
        row.round_start = row.attempts;
        row.requeues += 1;
        row.lease = None;
        Ok(Requeue::Requeued(Box::new(row.view())))
    }

    async fn count(&self, status: DeliveryStatus) -> Result<u64, ServiceError> {
        Ok(self.lock().values().filter(|r| r.status == status).count() as u64)
    }
}

/// The enqueue step of embedded mode, a consumer on the subscriber runtime named
/// `webhooks`: reads every partition log from an in-memory checkpoint, plans deliveries,
/// inserts them, moves the checkpoint. An event whose deliveries cannot be planned is
/// retried (with backoff), then its partition stalls; it is never skipped.
pub struct MemoryEnqueuer {
    store: Arc<dyn EventStore>,
    deliveries: Arc<dyn DeliveryStore>,
    checkpoints: Mutex<Vec<LogId>>,
}

impl MemoryEnqueuer {
    /// An enqueuer from the start of `store`'s log into `deliveries`.
    pub fn new(store: Arc<dyn EventStore>, deliveries: Arc<dyn DeliveryStore>) -> Self {
        let partitions = store.partitions() as usize;
        MemoryEnqueuer {
            store,
            deliveries,
            checkpoints: Mutex::new(vec![LogId::ZERO; partitions]),
        }
    }

    fn checkpoints(&self) -> MutexGuard<'_, Vec<LogId>> {
        // Plain writes of copy values only: a poisoned lock still holds sound data.
        self.checkpoints.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Handler for MemoryEnqueuer {
    fn name(&self) -> &str {
        PROJECTION
    }

    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError> {
        Ok(self
            .checkpoints()
            .get(partition as usize)
            .copied()
            .unwrap_or(LogId::ZERO))
    }

    async fn apply(
        &self,
        partition: u32,
        after: LogId,
        events: &[RecordedEvent],
        _fence: Option<u64>,
    ) -> Result<Outcome, HandlerError> {
        let Some(last) = events.last().map(|e| e.position.id) else {
            return Ok(Outcome::Applied);
        };
        if self.checkpoint(partition).await? != after {
            return Ok(Outcome::Moved);
        }
        let planned = super::plan(&*self.store, events)
            .await
            .map_err(|e| HandlerError::failed(e.to_string()))?;
        if !planned.is_empty() {
            // Delivery ids derive from (event, url): a batch planned twice inserts nothing
            // the second time.
            self.deliveries.insert(planned).await.map_err(|e| match e {
                e @ ServiceError::Unavailable { .. } => HandlerError::Unavailable(e.to_string()),
                e => HandlerError::failed(e.to_string()),
            })?;
        }
        if let Some(c) = self.checkpoints().get_mut(partition as usize) {
            *c = last;
        }
        Ok(Outcome::Applied)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn new_delivery(url: &str) -> NewDelivery {
        let event_id = Uuid::now_v7();
        NewDelivery {
            id: super::super::delivery_id(event_id, Utc::now(), url),
            event_id,
            event_type: "job_completed".into(),
            stream: "job-x".into(),
            position: "0@1-0".into(),
            url: url.into(),
            payload: json!({}),
        }
    }

    fn result(code: Option<u16>, error: Option<&str>) -> AttemptResult {
        AttemptResult {
            attempted_at: Utc::now(),
            duration: Duration::from_millis(3),
            status_code: code,
            error: error.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn lifecycle_claim_retry_dead_requeue() {
        let store = MemoryDeliveryStore::new();
        let d = new_delivery("http://a/h");
        assert_eq!(store.insert(vec![d.clone(), d.clone()]).await.unwrap(), 1);
        let lease = Duration::from_secs(60);
        let c = store.claim_due(10, lease).await.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].attempt, c[0].round_attempt), (1, 1));
        // Leased: not due for anybody else.
        assert!(store.claim_due(10, lease).await.unwrap().is_empty());
        let ok = store
            .record(
                &c[0],
                &result(Some(500), Some("HTTP 500")),
                Next::RetryIn(Duration::ZERO),
            )
            .await
            .unwrap();
        assert!(ok);
        let c = store.claim_due(10, lease).await.unwrap();
        assert_eq!((c[0].attempt, c[0].round_attempt), (2, 2));
        store
            .record(&c[0], &result(None, Some("timeout")), Next::Dead)
            .await
            .unwrap();
        let dead = store
            .list(&DeliveryQuery {
                status: Some(DeliveryStatus::Dead),
                limit: 10,
                after: None,
            })
            .await
            .unwrap();
        assert_eq!(dead.items.len(), 1);
        assert_eq!(dead.items[0].attempt_history.len(), 2);
        assert_eq!(dead.items[0].attempt_history[1].outcome, "dead");
        assert_eq!(store.count(DeliveryStatus::Dead).await.unwrap(), 1);
        assert!(matches!(
            store.requeue(Uuid::now_v7()).await.unwrap(),
            Requeue::NotFound
        ));
        assert!(matches!(
            store.requeue(d.id).await.unwrap(),
            Requeue::Requeued(_)
        ));
        assert!(matches!(
            store.requeue(d.id).await.unwrap(),
            Requeue::NotDead(DeliveryStatus::Pending)
        ));
        let c = store.claim_due(10, lease).await.unwrap();
        assert_eq!((c[0].attempt, c[0].round_attempt), (3, 1));
        store
            .record(&c[0], &result(Some(200), None), Next::Delivered)
            .await
            .unwrap();
        let got = store.get(d.id).await.unwrap().unwrap();
        assert_eq!(
            (got.status.as_str(), got.attempts, got.requeues),
            ("delivered", 3, 1)
        );
        assert!(got.delivered_at.is_some() && got.next_attempt_at.is_none());
    }

    #[tokio::test]
    async fn a_lost_lease_records_the_attempt_but_leaves_the_delivery() {
        let store = MemoryDeliveryStore::new();
        let d = new_delivery("http://a/h");
        store.insert(vec![d.clone()]).await.unwrap();
        let first = store.claim_due(1, Duration::ZERO).await.unwrap();
        // The lease ran out at once: another sender claims it.
        let second = store.claim_due(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(second.len(), 1);
        let ok = store
            .record(&first[0], &result(Some(200), None), Next::Delivered)
            .await
            .unwrap();
        assert!(!ok);
        let got = store.get(d.id).await.unwrap().unwrap();
        assert_eq!(
            (got.status.as_str(), got.attempt_history.len()),
            ("pending", 1)
        );
    }

    #[tokio::test]
    async fn pages_by_id() {
        let store = MemoryDeliveryStore::new();
        for i in 0..5 {
            store
                .insert(vec![new_delivery(&format!("http://a/{i}"))])
                .await
                .unwrap();
        }
        let q = |after| DeliveryQuery {
            status: None,
            limit: 2,
            after,
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.list(&q(after)).await.unwrap();
            seen.extend(page.items.iter().map(|d| d.id));
            match page.next_cursor {
                Some(c) => after = Some(c.parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }
}

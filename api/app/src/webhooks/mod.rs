//! Webhooks (SPEC section 6.3): a durable subscriber with a checkpoint, and a sender.
//!
//! A job's or workflow's `webhook_url` (from its `job_submitted` / `workflow_created`
//! event) receives `job_completed`, terminal `job_failed` (`will_retry: false`),
//! `workflow_completed` and `workflow_failed`. Two halves, decoupled by a table of
//! delivery records, so that a slow or dead receiver never holds up a projection or
//! another receiver:
//!
//! 1. **Enqueue** ([`plan`]): for every such event with a target, one [`NewDelivery`]
//!    whose id is derived from (event id, url) ([`delivery_id`]). In full mode this is the
//!    `webhooks` [`PgProjection`](jobsource_projections::PgProjection)
//!    ([`postgres::WebhookProjection`]) run by the ordinary projection worker, so the
//!    delivery rows and the checkpoint commit in one transaction, and a re-delivered event
//!    inserts nothing (`ON CONFLICT DO NOTHING` on the unique `(event_id, url)`). In
//!    embedded mode [`memory::MemoryEnqueuer`] does the same over the in-memory store with
//!    an in-memory checkpoint.
//! 2. **Send** ([`sender::Sender`]): claims due `pending` deliveries (under a lease, so
//!    several senders never send the same one at once and a crashed sender's claims come
//!    due again), POSTs them concurrently (bounded) with a per-request timeout, and records
//!    every attempt. Failures are retried with exponential backoff and jitter; after the
//!    last attempt the delivery is dead-lettered, and `POST
//!    /v1/webhooks/deliveries/{id}/retry` re-queues it.
//!
//! The body ([`plan`]) is one superset: jobsource's fields (`delivery_id`, `type`,
//! `occurred_at`, `position`, the envelope as `event`, ...) beside the seed system's webhook
//! body (`event_type`, `status`, `result`, `duration`, `completed_at`, `metadata`, ...), so
//! receivers written for either parse it. It is computed once, when the delivery is
//! enqueued, stored with the delivery and sent verbatim on every attempt: deliveries
//! enqueued before the seed fields existed keep (and are sent with) the body they were
//! enqueued with.
//!
//! Delivery is at least once. Receivers deduplicate on the `X-Jobsource-Delivery` header,
//! which is the same on every attempt and on any redelivery of the same event to the same
//! url. With `JOBSOURCE_WEBHOOK_SECRET` set, `X-Jobsource-Signature: t=<unix>,v1=<hex>`
//! carries an HMAC-SHA256 of `"<t>.<body>"` ([`signature`]).
//!
//! Delivery records live behind [`DeliveryStore`]: [`postgres::PgDeliveryStore`]
//! (`webhook_deliveries` and `webhook_attempts`, migration 0004) and
//! [`memory::MemoryDeliveryStore`].

pub mod memory;
pub mod plan;
pub mod postgres;
pub mod sender;
pub mod signature;
pub mod targets;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::read::Page;
use crate::service::ServiceError;

pub use plan::plan;

mod delivery;
pub use delivery::*;

/// Counter of delivery attempts, by `outcome` (`delivered`, `failed` = will be retried,
/// `dead` = the last attempt failed).
pub const DELIVERIES_TOTAL: &str = "jobsource_webhook_deliveries_total";
/// Gauge: deliveries currently dead-lettered (refreshed by the sender).
pub const DEAD_LETTERS: &str = "jobsource_webhook_dead_letters";

/// Name of the enqueue subscriber (checkpoints, status).
pub const PROJECTION: &str = "webhooks";

/// Event types that are delivered (terminal `job_failed` only, see [`plan`]).
pub const DELIVERED_TYPES: [&str; 4] = [
    "job_completed",
    "job_failed",
    "workflow_completed",
    "workflow_failed",
];

/// Settings of the webhook sender.
#[derive(Clone)]
pub struct WebhookConfig {
    /// HMAC-SHA256 signing secret (`JOBSOURCE_WEBHOOK_SECRET`); unsigned when `None`.
    pub secret: Option<String>,
    /// Attempts of one delivery (per round) before it is dead-lettered.
    pub max_attempts: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Delay before the second attempt; doubled for each further attempt.
    pub initial_backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
    /// Requests in flight at once (per process).
    pub concurrency: usize,
    /// How often the sender looks for due deliveries when idle.
    pub poll_interval: Duration,
    /// Events per batch of the embedded enqueuer.
    pub batch: usize,
    /// `JOBSOURCE_WEBHOOK_DENY_PRIVATE`: never send to non-public addresses.
    pub deny_private: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            secret: None,
            max_attempts: 6,
            timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(15 * 60),
            concurrency: 16,
            poll_interval: Duration::from_millis(250),
            batch: 256,
            deny_private: false,
        }
    }
}

impl WebhookConfig {
    /// How long a claimed delivery is reserved for its sender: the request timeout plus a
    /// margin. A sender that dies mid-request leaves the delivery due again after this.
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(30)
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("concurrency", &self.concurrency)
            .field("poll_interval", &self.poll_interval)
            .field("batch", &self.batch)
            .finish()
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt failed; waits for a manual retry.
    Dead,
}

impl DeliveryStatus {
    /// `pending`, `delivered` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "dead" => Ok(DeliveryStatus::Dead),
            other => Err(format!("must be pending, delivered or dead, not {other:?}")),
        }
    }
}

/// Where delivery records live (PostgreSQL in full mode, memory in embedded mode).
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// Creates deliveries; ones that exist already (same id, or same event and url) are
    /// left alone. Returns how many were created.
    async fn insert(&self, deliveries: Vec<NewDelivery>) -> Result<u64, ServiceError>;

    /// Claims up to `limit` due pending deliveries, earliest due first, reserving them for
    /// `lease` (they are not due for anybody else meanwhile).
    async fn claim_due(&self, limit: usize, lease: Duration) -> Result<Vec<Claimed>, ServiceError>;

    /// Records an attempt and moves the delivery on as `next` says. Returns false when
    /// the claim's lease was lost (the attempt is recorded, the delivery left alone).
    async fn record(
        &self,
        claimed: &Claimed,
        result: &AttemptResult,
        next: Next,
    ) -> Result<bool, ServiceError>;

    /// A page of deliveries, by id (oldest event first).
    async fn list(&self, query: &DeliveryQuery) -> Result<Page<Delivery>, ServiceError>;

    /// One delivery.
    async fn get(&self, id: Uuid) -> Result<Option<Delivery>, ServiceError>;

    /// Puts a dead delivery back in the queue, due now, with a fresh round of attempts.
    async fn requeue(&self, id: Uuid) -> Result<Requeue, ServiceError>;

    /// Number of deliveries with `status`.
    async fn count(&self, status: DeliveryStatus) -> Result<u64, ServiceError>;
}

/// The id of the delivery of event `event_id` (appended at `occurred_at`) to `url`.
///
/// Deterministic, so a redelivered event maps to the same delivery (receivers deduplicate
/// on it), and shaped like a UUID v7 whose timestamp is the event's, so ids sort by event
/// time (lists page by id like every other list). The other 74 bits come from
/// SHA-256(event id, url).
pub fn delivery_id(event_id: Uuid, occurred_at: DateTime<Utc>, url: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(event_id.as_bytes())
        .chain_update(url.as_bytes())
        .finalize();
    let ms = u64::try_from(occurred_at.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&digest[..10]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f); // version 7
    bytes[8] = 0x80 | (bytes[8] & 0x3f); // RFC 4122 variant
    Uuid::from_bytes(bytes)
}

/// Delay before the attempt after failed attempt `round_attempt` (1-based within the
/// round): `initial * 2^(n-1)`, capped at `max`, with jitter (uniformly between half and
/// all of it) so that receivers coming back are not hit by every retry at once.
pub fn backoff(config: &WebhookConfig, round_attempt: u32) -> Duration {
    use rand::Rng;
    let exp = round_attempt.saturating_sub(1).min(30);
    let base = config
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(config.max_backoff);
    let factor: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    base.mul_f64(factor)
}

/// Caps an error text stored with an attempt.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_per_event_and_url_and_sort_by_event_time() {
        let e = Uuid::now_v7();
        let t = Utc::now();
        let a = delivery_id(e, t, "http://a/hook");
        assert_eq!(a, delivery_id(e, t, "http://a/hook"));
        assert_ne!(a, delivery_id(e, t, "http://b/hook"));
        assert_ne!(a, delivery_id(Uuid::now_v7(), t, "http://a/hook"));
        assert_eq!(a.get_version_num(), 7);
        let later = delivery_id(e, t + chrono::Duration::milliseconds(5), "http://a/hook");
        assert!(later > a);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let config = WebhookConfig {
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(10),
            ..WebhookConfig::default()
        };
        for _ in 0..50 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_secs(4) && third <= Duration::from_secs(8));
            let capped = backoff(&config, 40);
            assert!(capped >= Duration::from_secs(5) && capped <= Duration::from_secs(10));
        }
    }

    #[test]
    fn statuses_parse_and_print() {
        for s in ["pending", "delivered", "dead"] {
            assert_eq!(s.parse::<DeliveryStatus>().map(|d| d.as_str()), Ok(s));
        }
        assert!("done".parse::<DeliveryStatus>().is_err());
    }

    #[test]
    fn the_secret_is_not_printed() {
        let c = WebhookConfig {
            secret: Some("hunter2".into()),
            ..WebhookConfig::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h…");
        assert_eq!(truncate("short".into(), 10), "short");
    }
}

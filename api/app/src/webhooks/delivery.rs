//! Delivery records: what is enqueued, what an attempt answers, what the list routes show.

use super::*;

/// A delivery to create (one per event and target url).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// [`delivery_id`] of (event, url).
    pub id: Uuid,
    /// The event delivered.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Its stream.
    pub stream: String,
    /// Its position (`<partition>@<id>`).
    pub position: String,
    /// Target.
    pub url: String,
    /// The body to send.
    pub payload: Value,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    /// 1-based, counted over every round (manual retries continue the count).
    pub attempt: u32,
    /// When the request started.
    pub attempted_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// HTTP status answered, when there was an answer.
    pub status_code: Option<u16>,
    /// Why it failed (absent when delivered).
    pub error: Option<String>,
    /// `delivered`, `failed` (retried later) or `dead` (the last attempt).
    pub outcome: String,
}

/// A delivery record, as `GET /v1/webhooks/deliveries` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Delivery id: the `X-Jobsource-Delivery` header (stable across attempts).
    pub id: Uuid,
    /// The event delivered.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Its stream.
    pub stream: String,
    /// Its position (`<partition>@<id>`).
    pub position: String,
    /// Target.
    pub url: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts made (over every round).
    pub attempts: u32,
    /// Manual retries of the dead-lettered delivery.
    pub requeues: u32,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<String>,
    /// HTTP status of the last attempt, when it got an answer.
    pub last_status_code: Option<u16>,
    /// Error of the last attempt, when it failed.
    pub last_error: Option<String>,
    /// When the delivery was enqueued.
    pub created_at: String,
    /// When a receiver accepted it.
    pub delivered_at: Option<String>,
    /// The body sent.
    pub payload: Value,
    /// Every attempt, oldest first.
    pub attempt_history: Vec<AttemptView>,
}

/// A delivery claimed by a sender for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// Delivery id.
    pub id: Uuid,
    /// Target.
    pub url: String,
    /// Event type (sent as `X-Jobsource-Event`).
    pub event_type: String,
    /// The body to send.
    pub payload: Value,
    /// Number of this attempt over every round (1-based).
    pub attempt: u32,
    /// Number of this attempt within the current round (1-based; a manual retry starts a
    /// new round).
    pub round_attempt: u32,
    /// The claim's token: recording the attempt only changes the delivery while it holds.
    pub lease: Uuid,
}

/// What one attempt gave.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// HTTP status, when there was an answer.
    pub status_code: Option<u16>,
    /// Why it failed; `None` = delivered.
    pub error: Option<String>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Done.
    Delivered,
    /// Try again after this delay.
    RetryIn(Duration),
    /// Dead-lettered.
    Dead,
}

impl Next {
    /// The attempt's outcome label (`delivered`, `failed`, `dead`).
    pub fn outcome(self) -> &'static str {
        match self {
            Next::Delivered => "delivered",
            Next::RetryIn(_) => "failed",
            Next::Dead => "dead",
        }
    }
}

/// Filters of `GET /v1/webhooks/deliveries`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Status filter.
    pub status: Option<DeliveryStatus>,
    /// Page size.
    pub limit: usize,
    /// Only ids after this one.
    pub after: Option<Uuid>,
}

/// Result of re-queueing a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Requeue {
    /// It was dead and is pending again (as it is now).
    Requeued(Box<Delivery>),
    /// No such delivery.
    NotFound,
    /// It is not dead (its status).
    NotDead(DeliveryStatus),
}

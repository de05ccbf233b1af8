//! The sender: claims due deliveries and POSTs them, at most `concurrency` at once.
//!
//! The loop keeps a pipeline, not batches: whenever a request finishes, its slot is free
//! for the next due delivery, so a receiver that is slow (up to the request timeout) holds
//! one slot and never the deliveries to anybody else. Every attempt is recorded with its
//! outcome; a failed one is due again after [`backoff`](super::backoff), and the last
//! failed attempt of a round dead-letters the delivery.
//!
//! On shutdown, requests in flight get a short grace period and are then abandoned: their
//! claims expire after the lease and they are sent again (at least once; the receiver
//! deduplicates on `X-Jobsource-Delivery`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::signature::{sign, ATTEMPT_HEADER, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use super::{
    backoff, truncate, AttemptResult, Claimed, DeliveryStatus, DeliveryStore, Next, WebhookConfig,
    DEAD_LETTERS, DELIVERIES_TOTAL,
};

/// How long requests in flight may finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How often the dead-letter gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// Longest wait between claims while the delivery store is failing.
const MAX_IDLE: Duration = Duration::from_secs(5);
/// Longest error text kept with an attempt.
const MAX_ERROR: usize = 500;

/// Sends due deliveries from a [`DeliveryStore`].
pub struct Sender {
    store: Arc<dyn DeliveryStore>,
    client: reqwest::Client,
    config: WebhookConfig,
}

impl Sender {
    /// A sender over `store`. Fails only when the HTTP client cannot be built (TLS
    /// backend initialisation).
    pub fn new(store: Arc<dyn DeliveryStore>, config: WebhookConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("jobsource-webhooks/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .timeout(config.timeout);
        if config.deny_private {
            // Names resolve to public addresses only, at the moment of sending.
            builder = builder.dns_resolver(Arc::new(super::targets::PublicOnly));
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Sender {
            store,
            client,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let concurrency = self.config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut gauge_at = Instant::now();
        // Grows while the store cannot be reached, so an outage is not polled (and logged)
        // every `poll_interval`.
        let mut idle = self.config.poll_interval;
        self.refresh_gauge().await;
        tracing::info!(
            concurrency,
            max_attempts = self.config.max_attempts,
            signed = self.config.secret.is_some(),
            "webhook sender running"
        );
        while !*shutdown.borrow() {
            while let Some(done) = in_flight.try_join_next() {
                log_join(done);
            }
            let free = slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                match self.store.claim_due(free, self.config.lease()).await {
                    Ok(batch) => {
                        idle = self.config.poll_interval;
                        claimed = batch.len();
                        for delivery in batch {
                            let Ok(slot) = slots.clone().try_acquire_owned() else {
                                // Cannot happen (we claimed at most the free slots); the
                                // claim expires and the delivery comes due again.
                                break;
                            };
                            let me = self.clone();
                            in_flight.spawn(async move {
                                me.attempt(delivery).await;
                                drop(slot);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?idle,
                            "cannot claim webhook deliveries");
                        idle = (idle * 2).min(MAX_IDLE.max(self.config.poll_interval));
                    }
                }
            }
            if gauge_at.elapsed() >= GAUGE_EVERY {
                gauge_at = Instant::now();
                self.refresh_gauge().await;
            }
            if claimed > 0 && claimed == free {
                // Every free slot was filled: more may be due, once a slot frees up.
                tokio::select! {
                    Some(done) = in_flight.join_next() => log_join(done),
                    r = shutdown.changed() => if r.is_err() { break },
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                r = shutdown.changed() => if r.is_err() { break },
            }
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(done) = in_flight.join_next().await {
                log_join(done);
            }
        })
        .await
        .is_err()
        {
            tracing::info!(
                abandoned = in_flight.len(),
                "webhook requests still in flight at shutdown; they will be sent again"
            );
            in_flight.abort_all();
        }
        tracing::info!("webhook sender stopped");
    }

    /// Sends one claimed delivery and records the attempt; returns what happens next.
    pub async fn attempt(&self, claimed: Claimed) -> Next {
        let result = self.send(&claimed).await;
        let next = if result.error.is_none() {
            Next::Delivered
        } else if claimed.round_attempt >= self.config.max_attempts {
            Next::Dead
        } else {
            Next::RetryIn(backoff(&self.config, claimed.round_attempt))
        };
        metrics::counter!(DELIVERIES_TOTAL, "outcome" => next.outcome()).increment(1);
        match next {
            Next::Delivered => tracing::debug!(delivery = %claimed.id, attempt = claimed.attempt,
                "webhook delivered"),
            Next::RetryIn(delay) => tracing::info!(delivery = %claimed.id, url = %claimed.url,
                attempt = claimed.attempt, error = result.error.as_deref().unwrap_or(""), ?delay,
                "webhook attempt failed; will retry"),
            Next::Dead => {
                metrics::gauge!(DEAD_LETTERS).increment(1.0);
                tracing::warn!(delivery = %claimed.id, url = %claimed.url,
                    attempt = claimed.attempt, error = result.error.as_deref().unwrap_or(""),
                    "webhook dead-lettered after its last attempt");
            }
        }
        match self.store.record(&claimed, &result, next).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(delivery = %claimed.id,
                "webhook claim expired during the attempt; another sender has it"),
            // Unrecorded: the claim expires and the delivery is sent again.
            Err(e) => tracing::error!(delivery = %claimed.id, error = %e,
                "cannot record a webhook attempt"),
        }
        next
    }

    async fn send(&self, claimed: &Claimed) -> AttemptResult {
        let attempted_at = Utc::now();
        let started = Instant::now();
        let failed = |status_code: Option<u16>, error: String| AttemptResult {
            attempted_at,
            duration: started.elapsed(),
            status_code,
            error: Some(truncate(error, MAX_ERROR)),
        };
        if self.config.deny_private {
            // IP literals bypass the resolver: checked here.
            let literal = super::targets::host_port(&claimed.url)
                .and_then(|(host, _)| host.parse::<std::net::IpAddr>().ok());
            if let Some(ip) = literal.filter(|ip| super::targets::is_private(*ip)) {
                return failed(
                    None,
                    format!(
                        "refused: {ip} is not a public address (JOBSOURCE_WEBHOOK_DENY_PRIVATE)"
                    ),
                );
            }
        }
        let body = match serde_json::to_vec(&claimed.payload) {
            Ok(b) => b,
            Err(e) => return failed(None, format!("cannot serialize the payload: {e}")),
        };
        let mut request = self
            .client
            .post(&claimed.url)
            .header(CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, claimed.id.to_string())
            .header(EVENT_HEADER, &claimed.event_type)
            .header(ATTEMPT_HEADER, claimed.attempt.to_string());
        if let Some(secret) = &self.config.secret {
            match sign(secret.as_bytes(), attempted_at.timestamp(), &body) {
                Ok(signature) => request = request.header(SIGNATURE_HEADER, signature),
                Err(e) => return failed(None, format!("cannot sign: {e}")),
            }
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => AttemptResult {
                attempted_at,
                duration: started.elapsed(),
                status_code: Some(response.status().as_u16()),
                error: None,
            },
            Ok(response) => {
                let status = response.status();
                failed(Some(status.as_u16()), format!("receiver answered {status}"))
            }
            Err(e) if e.is_timeout() => {
                failed(None, format!("no answer within {:?}", self.config.timeout))
            }
            Err(e) if e.is_connect() => failed(
                None,
                format!("cannot connect: {}", error_chain(&e.without_url())),
            ),
            Err(e) => failed(None, error_chain(&e.without_url())),
        }
    }

    async fn refresh_gauge(&self) {
        match self.store.count(DeliveryStatus::Dead).await {
            Ok(n) => metrics::gauge!(DEAD_LETTERS).set(n as f64),
            Err(e) => tracing::debug!(error = %e, "cannot count dead webhook deliveries"),
        }
    }
}

/// An error with its causes (`a: b: c`), which is where reqwest keeps the useful part.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if !e.is_cancelled() {
            tracing::error!(error = %e, "webhook attempt task failed");
        }
    }
}

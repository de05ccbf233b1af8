//! Orchestration: the process manager that turns events into commands (SPEC section 2).
//!
//! The orchestrator is a consumer on the subscriber runtime
//! ([`jobsource_projections::subscriber`]), named `orchestrator`. For every partition of the
//! event store it keeps a checkpoint (in an [`OrchestratorState`]: memory in embedded mode,
//! Redis in full mode); the runtime reads the partition log after it in batches, and the
//! [`Reactor`] runs the reactions of each event through the command layer ([`Service`]) and
//! moves the checkpoint past the event once its commands succeeded.
//!
//! Delivery is at least once: a crash between a command and the checkpoint write hands the
//! event over again. That is harmless because every command carries an idempotency key
//! derived from the causing event and the target (see `react`), and because every decision
//! is taken against the targets' current state.
//!
//! Failures never skip an event: an unreachable backend ([`ServiceError::Unavailable`]) is
//! waited for without moving the checkpoint; any other error is retried a bounded number
//! of times, then the partition stalls at that event (recorded in the runtime's status
//! store, shown by [`Orchestrator::status`]) until [`Orchestrator::resume`], while the
//! other partitions go on.

mod react;
mod state;

#[cfg(test)]
mod tests;

pub use state::{MemoryOrchestratorState, OrchestratorState, RedisOrchestratorState};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jobsource_eventstore::{LogId, RecordedEvent};
use jobsource_projections::subscriber::lease::Claims;
use jobsource_projections::subscriber::{
    Handler, HandlerError, MemoryStatusStore, Outcome, StatusStore, Subscriber, SubscriberConfig,
};
use tokio::sync::watch;
use tracing::Instrument;

use crate::service::{Service, ServiceError};

/// The consumer's name in status, metrics, the CLI and the API.
pub const NAME: &str = "orchestrator";

/// Tuning of the orchestrator loop.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Events read from a partition log per batch.
    pub batch: usize,
    /// Attempts at an event failing with a non-transient error before the partition stalls.
    pub max_attempts: u32,
    /// First delay between attempts (doubled each time).
    pub backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
    /// Longest wait for new events when caught up (the tail usually wakes the loop sooner).
    pub idle_wait: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            batch: 256,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            idle_wait: Duration::from_millis(500),
        }
    }
}

/// The handler: reacts to each event of a batch and moves the checkpoint past it.
pub struct Reactor {
    service: Arc<Service>,
    state: Arc<dyn OrchestratorState>,
}

fn handler_error(e: ServiceError, event: &RecordedEvent) -> HandlerError {
    match e {
        e @ ServiceError::Unavailable { .. } => HandlerError::Unavailable(e.to_string()),
        e => HandlerError::Failed {
            message: e.to_string(),
            position: Some(event.position.to_string()),
        },
    }
}

fn state_error(e: ServiceError) -> HandlerError {
    match e {
        e @ ServiceError::Unavailable { .. } => HandlerError::Unavailable(e.to_string()),
        e => HandlerError::failed(e.to_string()),
    }
}

impl Reactor {
    /// Moves the checkpoint (fenced under a lease); false when a later holder wrote it.
    async fn save(
        &self,
        partition: u32,
        to: LogId,
        fence: Option<u64>,
    ) -> Result<bool, HandlerError> {
        self.state
            .advance_fenced(partition, to, fence)
            .await
            .map_err(state_error)
    }
}

#[async_trait]
impl Handler for Reactor {
    fn name(&self) -> &str {
        NAME
    }

    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError> {
        self.state.checkpoint(partition).await.map_err(state_error)
    }

    async fn apply(
        &self,
        partition: u32,
        _after: LogId,
        events: &[RecordedEvent],
        fence: Option<u64>,
    ) -> Result<Outcome, HandlerError> {
        // Events needing no command are passed over without a checkpoint write each;
        // `unsaved` is the furthest such one, saved with the next write.
        let mut unsaved: Option<LogId> = None;
        for event in events {
            let id = event.position.id;
            if !react::reacts_to(&event.envelope.event_type) {
                unsaved = Some(id);
                continue;
            }
            let env = &event.envelope;
            let span = tracing::info_span!("orchestrate",
                correlation_id = %env.correlation_id,
                position = %event.position,
                event_type = %env.event_type,
                stream = %env.stream,
            );
            if let Err(e) = self.react(event).instrument(span).await {
                if let Some(u) = unsaved {
                    // Keep the progress made before the failing event.
                    if !self.save(partition, u, fence).await? {
                        return Ok(Outcome::Fenced);
                    }
                }
                return Err(handler_error(e, event));
            }
            if !self.save(partition, id, fence).await? {
                return Ok(Outcome::Fenced);
            }
            unsaved = None;
        }
        if let Some(u) = unsaved {
            if !self.save(partition, u, fence).await? {
                return Ok(Outcome::Fenced);
            }
        }
        Ok(Outcome::Applied)
    }
}

/// The process manager. Cheap to share behind an `Arc`; [`Orchestrator::run`] drives it.
pub struct Orchestrator {
    reactor: Arc<Reactor>,
    status: Arc<dyn StatusStore>,
    config: OrchestratorConfig,
    claims: Option<Arc<Claims>>,
    subscriber: Arc<Subscriber>,
}

impl Orchestrator {
    /// An orchestrator issuing commands through `service`, keeping its checkpoints and
    /// dependents index in `state` (and its stalls in memory; see
    /// [`Orchestrator::with_status_store`]).
    pub fn new(service: Arc<Service>, state: Arc<dyn OrchestratorState>) -> Self {
        let reactor = Arc::new(Reactor { service, state });
        Orchestrator::build(
            reactor,
            Arc::new(MemoryStatusStore::new()),
            OrchestratorConfig::default(),
            None,
        )
    }

    fn build(
        reactor: Arc<Reactor>,
        status: Arc<dyn StatusStore>,
        config: OrchestratorConfig,
        claims: Option<Arc<Claims>>,
    ) -> Self {
        let store = reactor.service.store().clone();
        let subscriber = Subscriber::new(
            reactor.clone(),
            store.clone(),
            status.clone(),
            SubscriberConfig {
                batch: config.batch,
                max_attempts: config.max_attempts,
                backoff: config.backoff,
                max_backoff: config.max_backoff,
                idle_wait: config.idle_wait,
                // Every partition at once: reactions wait on command round trips.
                parallel: store.partitions() as usize,
            },
        );
        let subscriber = Arc::new(match claims.clone() {
            Some(c) => subscriber.with_claims(c),
            None => subscriber,
        });
        Orchestrator {
            reactor,
            status,
            config,
            claims,
            subscriber,
        }
    }

    /// Replaces the loop's tuning.
    pub fn with_config(self, config: OrchestratorConfig) -> Self {
        Orchestrator::build(self.reactor, self.status, config, self.claims)
    }

    /// Records stalls in `status` (Redis in full mode, so the CLI sees and resumes them).
    pub fn with_status_store(self, status: Arc<dyn StatusStore>) -> Self {
        Orchestrator::build(self.reactor, status, self.config, self.claims)
    }

    /// Handles only the partitions this instance holds a lease on (scale-out).
    pub fn with_claims(self, claims: Arc<Claims>) -> Self {
        Orchestrator::build(self.reactor, self.status, self.config, Some(claims))
    }

    /// The command layer the orchestrator uses.
    pub fn service(&self) -> &Arc<Service> {
        &self.reactor.service
    }

    /// The runtime driving it (status, resume, stop).
    pub fn subscriber(&self) -> &Arc<Subscriber> {
        &self.subscriber
    }

    /// Handles everything the log holds past the checkpoints, the partitions
    /// concurrently, in batches; returns events handled (every event the checkpoints moved
    /// past, including those that need no command).
    ///
    /// Events appended meanwhile, including those the orchestrator's own commands caused,
    /// may be left for the next call; [`Orchestrator::run`] keeps calling. Returns the first
    /// transient error after every partition got as far as it could; stalled partitions
    /// are skipped (see [`Orchestrator::status`]).
    pub async fn catch_up(&self) -> Result<usize, ServiceError> {
        self.subscriber
            .catch_up()
            .await
            .map(|n| n as usize)
            .map_err(|e| ServiceError::Unavailable {
                backend: "store",
                message: e.to_string(),
            })
    }

    /// Runs until `shutdown` turns true (checked between batches): catch up, then wait for
    /// new events via the store's tail. Unavailable backends are waited for with backoff.
    /// A dropped `shutdown` sender counts as shutdown: nobody could ask any more.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        self.subscriber.clone().run(shutdown).await;
    }

    /// Per-partition `(partition, checkpoint as <p>@<id>, running|stalled|stopped, last
    /// error with the position it happened at)`.
    pub async fn status(&self) -> Vec<(u32, String, String, Option<String>)> {
        self.subscriber
            .status(0)
            .await
            .into_iter()
            .map(|r| {
                let error = match (r.last_error, r.error_position) {
                    (Some(e), Some(p)) if !e.contains(&p) => Some(format!("at {p}: {e}")),
                    (e, _) => e,
                };
                (r.partition, r.checkpoint, r.state, error)
            })
            .collect()
    }

    /// Clears every stalled partition so the next pass tries its failing event again
    /// (after the cause was fixed); returns how many were stalled.
    pub async fn resume(&self) -> Result<u64, ServiceError> {
        self.subscriber
            .resume()
            .await
            .map_err(|e| ServiceError::Unavailable {
                backend: "store",
                message: e.to_string(),
            })
    }
}

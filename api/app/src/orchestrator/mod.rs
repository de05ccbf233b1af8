//! Orchestration: the process manager that turns events into commands (SPEC section 2).
//!
//! The orchestrator is a durable subscriber. For every partition of the event store it
//! keeps a checkpoint (in an [`OrchestratorState`]: memory in embedded mode, Redis in full
//! mode), reads the partition log after it in batches, runs the reactions of each event
//! through the command layer ([`Service`]), and moves the checkpoint past the event once
//! its commands succeeded.
//!
//! Delivery is at least once: a crash between a command and the checkpoint write hands the
//! event over again. That is harmless because every command carries an idempotency key
//! derived from the causing event and the target (see `react`), and because every decision
//! is taken against the targets' current state.
//!
//! Failures never skip an event:
//! - a backend that cannot be reached ([`ServiceError::Unavailable`]) is waited for, with
//!   backoff, without moving the checkpoint;
//! - any other error is logged with the event's position and retried a bounded number of
//!   times; then the partition is marked stalled (see [`Orchestrator::status`]) and left
//!   alone until [`Orchestrator::resume`] or a restart, while the other partitions go on.

mod react;
mod state;

#[cfg(test)]
mod tests;

pub use state::{MemoryOrchestratorState, OrchestratorState, RedisOrchestratorState};

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use jobsource_eventstore::{EventStream, LogId, Position, RecordedEvent};
use tokio::sync::watch;
use tracing::Instrument;

use crate::service::{Service, ServiceError};

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

/// What the orchestrator knows about one partition besides its durable checkpoint.
#[derive(Debug, Clone, Default)]
struct PartitionHealth {
    /// Last checkpoint read or written (shown when the state cannot be read).
    checkpoint: LogId,
    /// Set after `max_attempts` failures of one event; the partition is not processed.
    stalled: bool,
    /// The last error, with the position it happened at.
    last_error: Option<String>,
}

/// Why handling a partition stopped early.
enum Stop {
    /// A backend is unavailable: wait and try again from the checkpoint.
    Transient(ServiceError),
    /// The partition is stalled on an event.
    Stalled,
}

/// The process manager. Cheap to share behind an `Arc`; [`Orchestrator::run`] drives it.
pub struct Orchestrator {
    service: Arc<Service>,
    state: Arc<dyn OrchestratorState>,
    config: OrchestratorConfig,
    health: Mutex<Vec<PartitionHealth>>,
    /// One lock per partition, held while it is processed: a direct `catch_up` beside a
    /// running loop must not handle the same events concurrently (the checkpoint is a
    /// plain set and could move backwards).
    partition_locks: Vec<tokio::sync::Mutex<()>>,
}

impl Orchestrator {
    /// An orchestrator issuing commands through `service`, keeping its checkpoints and
    /// dependents index in `state`.
    pub fn new(service: Arc<Service>, state: Arc<dyn OrchestratorState>) -> Self {
        let partitions = service.store().partitions() as usize;
        Orchestrator {
            service,
            state,
            config: OrchestratorConfig::default(),
            health: Mutex::new(vec![PartitionHealth::default(); partitions]),
            partition_locks: (0..partitions)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// Replaces the loop's tuning.
    pub fn with_config(mut self, config: OrchestratorConfig) -> Self {
        self.config = config;
        self
    }

    /// The command layer the orchestrator uses.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Handles everything the log holds past the checkpoints, partition by partition (the
    /// partitions concurrently), in batches; returns events handled (every event the
    /// checkpoints moved past, including those that need no command).
    ///
    /// Events appended meanwhile, including those the orchestrator's own commands caused,
    /// may be left for the next call; [`Orchestrator::run`] keeps calling. Returns the first
    /// transient error after every partition got as far as it could; stalled partitions
    /// are skipped (see [`Orchestrator::status`]).
    pub async fn catch_up(&self) -> Result<usize, ServiceError> {
        self.catch_up_until(None).await
    }

    async fn catch_up_until(
        &self,
        shutdown: Option<&watch::Receiver<bool>>,
    ) -> Result<usize, ServiceError> {
        let partitions = self.partition_locks.len() as u32;
        let results = futures::future::join_all(
            (0..partitions).map(|p| self.catch_up_partition(p, shutdown)),
        )
        .await;
        let mut handled = 0;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(n) => handled += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(handled),
        }
    }

    /// Runs until `shutdown` turns true (checked between batches): catch up, then wait for
    /// new events via the store's tail (woken by the next tail item or after at most
    /// `idle_wait`, 500 ms by default). Unavailable backends are waited for with backoff.
    /// A dropped `shutdown` sender counts as shutdown: nobody could ask any more.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let store = self.service.store().clone();
        let mut tail: Option<EventStream> = None;
        let mut delay = self.config.backoff;
        tracing::info!(
            partitions = self.partition_locks.len(),
            "orchestrator running"
        );
        while !*shutdown.borrow() {
            if tail.is_none() {
                // Opened before catching up, so an append after the catch-up's last read
                // still wakes the wait below.
                tail = match store.head().await {
                    Ok(head) => match store.tail(head).await {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot open the tail; polling");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the log head; polling");
                        None
                    }
                };
            }
            match self.catch_up_until(Some(&shutdown)).await {
                Ok(n) => {
                    delay = self.config.backoff;
                    if n > 0 {
                        // Our own commands appended events (and others may have): go on.
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?delay, "backend unavailable; waiting");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        r = shutdown.changed() => if r.is_err() { break },
                    }
                    delay = (delay * 2).min(self.config.max_backoff);
                    continue;
                }
            }
            if !self.wait_for_events(&mut tail, &mut shutdown).await {
                break;
            }
        }
        tracing::info!("orchestrator stopped");
    }

    /// Waits for the next tail item, `idle_wait` or shutdown; false when the shutdown
    /// sender is gone. A tail that ended or failed is dropped, to be reopened.
    async fn wait_for_events(
        &self,
        tail: &mut Option<EventStream>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let next = async {
            match tail.as_mut() {
                Some(t) => t.next().await,
                None => futures::future::pending().await,
            }
        };
        let woken = tokio::select! {
            r = tokio::time::timeout(self.config.idle_wait, next) => r,
            r = shutdown.changed() => return r.is_ok(),
        };
        match woken {
            Ok(Some(Ok(_))) => {
                // One catch-up covers every event already delivered: drop the rest of the
                // burst instead of waking once per event.
                if let Some(t) = tail.as_mut() {
                    for _ in 0..10_000 {
                        match t.next().now_or_never() {
                            Some(Some(Ok(_))) => {}
                            Some(Some(Err(_)) | None) => {
                                *tail = None;
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "tail failed; reopening");
                *tail = None;
            }
            Ok(None) => *tail = None,
            Err(_) => {}
        }
        true
    }

    /// Per-partition `(partition, checkpoint as <p>@<id>, "running"|"stalled", last error)`.
    pub async fn status(&self) -> Vec<(u32, String, String, Option<String>)> {
        let partitions = self.partition_locks.len() as u32;
        let mut out = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let durable = self.state.checkpoint(p).await;
            let health = self.health_of(p);
            let (checkpoint, last_error) = match durable {
                Ok(c) => (c, health.last_error),
                Err(e) => (
                    health.checkpoint,
                    Some(format!("cannot read the checkpoint: {e}")),
                ),
            };
            let state = if health.stalled { "stalled" } else { "running" };
            out.push((
                p,
                Position::new(p, checkpoint).to_string(),
                state.to_owned(),
                last_error,
            ));
        }
        out
    }

    /// Clears a stalled partition so the next catch-up tries its failing event again
    /// (after the cause was fixed).
    pub fn resume(&self, partition: u32) {
        let mut health = self.health();
        if let Some(h) = health.get_mut(partition as usize) {
            h.stalled = false;
        }
    }

    fn health(&self) -> MutexGuard<'_, Vec<PartitionHealth>> {
        // Only plain field writes happen under this lock; a poisoned one is still sound.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn health_of(&self, partition: u32) -> PartitionHealth {
        self.health()
            .get(partition as usize)
            .cloned()
            .unwrap_or_default()
    }

    fn update_health(&self, partition: u32, f: impl FnOnce(&mut PartitionHealth)) {
        if let Some(h) = self.health().get_mut(partition as usize) {
            f(h);
        }
    }

    async fn save_checkpoint(&self, partition: u32, to: LogId) -> Result<(), ServiceError> {
        self.state.advance(partition, to).await?;
        self.update_health(partition, |h| h.checkpoint = to);
        Ok(())
    }

    /// Handles partition `p` from its checkpoint to the end of its log.
    async fn catch_up_partition(
        &self,
        p: u32,
        shutdown: Option<&watch::Receiver<bool>>,
    ) -> Result<usize, ServiceError> {
        let Some(lock) = self.partition_locks.get(p as usize) else {
            return Ok(0);
        };
        let _guard = lock.lock().await;
        if self.health_of(p).stalled {
            return Ok(0);
        }
        let mut after = self.state.checkpoint(p).await?;
        self.update_health(p, |h| h.checkpoint = after);
        let mut handled = 0;
        loop {
            if shutdown.is_some_and(|s| *s.borrow()) {
                return Ok(handled);
            }
            let batch = self
                .service
                .store()
                .read_partition(p, after, self.config.batch)
                .await?;
            // Events needing no command are passed over without a checkpoint write each;
            // `unsaved` is the furthest such one, saved with the next write.
            let mut unsaved: Option<LogId> = None;
            for event in &batch {
                let id = event.position.id;
                if react::reacts_to(&event.envelope.event_type) {
                    match self.handle(p, event).await {
                        Ok(()) => {}
                        Err(stop) => {
                            if let Some(u) = unsaved {
                                // Keep the progress made before the failing event.
                                self.save_checkpoint(p, u).await?;
                            }
                            return match stop {
                                Stop::Transient(e) => Err(e),
                                Stop::Stalled => Ok(handled),
                            };
                        }
                    }
                    self.save_checkpoint(p, id).await?;
                    unsaved = None;
                } else {
                    unsaved = Some(id);
                }
                after = id;
                handled += 1;
            }
            if let Some(u) = unsaved {
                self.save_checkpoint(p, u).await?;
            }
            if batch.len() < self.config.batch {
                return Ok(handled);
            }
        }
    }

    /// Handles one event: retries non-transient failures up to `max_attempts`, then marks
    /// the partition stalled.
    async fn handle(&self, p: u32, event: &RecordedEvent) -> Result<(), Stop> {
        let env = &event.envelope;
        let span = tracing::info_span!("orchestrate",
            correlation_id = %env.correlation_id,
            position = %event.position,
            event_type = %env.event_type,
            stream = %env.stream,
        );
        let mut delay = self.config.backoff;
        let mut attempt = 1;
        loop {
            match self.react(event).instrument(span.clone()).await {
                Ok(()) => {
                    // The error shown is the current one: clear it once the event passed.
                    self.update_health(p, |h| h.last_error = None);
                    return Ok(());
                }
                Err(e @ ServiceError::Unavailable { .. }) => {
                    let message = format!("at {}: {e}", event.position);
                    self.update_health(p, |h| h.last_error = Some(message));
                    return Err(Stop::Transient(e));
                }
                Err(e) if attempt < self.config.max_attempts => {
                    span.in_scope(|| {
                        tracing::warn!(attempt, error = %e, "reaction failed; retrying");
                    });
                    let message = format!("at {} (attempt {attempt}): {e}", event.position);
                    self.update_health(p, |h| h.last_error = Some(message));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.max_backoff);
                    attempt += 1;
                }
                Err(e) => {
                    span.in_scope(|| {
                        tracing::error!(attempt, error = %e,
                            "reaction keeps failing; partition stalled");
                    });
                    let message = format!("at {}: {e}", event.position);
                    self.update_health(p, |h| {
                        h.stalled = true;
                        h.last_error = Some(message);
                    });
                    return Err(Stop::Stalled);
                }
            }
        }
    }
}

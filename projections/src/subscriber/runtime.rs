//! The driver: catch-up, tail, batches, retries, stalls, resume, stop and status for one
//! consumer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use jobsource_eventstore::{EventStore, EventStream, LogId};
use tokio::sync::{watch, Notify};

use super::lease::Claims;
use super::{Handler, HandlerError, StatusStore};

/// Histogram of applied batches' durations (seconds), by `projection`.
pub const BATCH_DURATION: &str = "jobsource_projection_batch_duration_seconds";
/// Counter of events applied, by `projection`.
pub const EVENTS_APPLIED: &str = "jobsource_projection_events_total";

/// Tuning of a subscriber.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// Events read from a partition per batch.
    pub batch: usize,
    /// Attempts at a failing batch before the partition stalls.
    pub max_attempts: u32,
    /// First delay between attempts, and after an outage (doubled each time).
    pub backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
    /// Longest wait for new events when caught up (the tail usually wakes the loop
    /// sooner); also how soon a `resume` from another process is noticed.
    pub idle_wait: Duration,
    /// Partitions worked on at once (their round trips overlap).
    pub parallel: usize,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            batch: 500,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            idle_wait: Duration::from_secs(1),
            parallel: 1,
        }
    }
}

/// Whether the subscriber's task runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started here (status then shows what the status store recorded).
    Idle,
    /// Running.
    Running,
    /// Its task ended.
    Stopped,
}

#[derive(Debug, Clone, Default)]
pub(super) struct PartitionLive {
    /// Last checkpoint read (shown when it cannot be read).
    pub(super) checkpoint: LogId,
    /// The current error (retries, outage), cleared by the next applied batch.
    pub(super) error: Option<String>,
}

pub(super) struct Live {
    pub(super) phase: Phase,
    pub(super) partitions: Vec<PartitionLive>,
}

/// Why a partition's batch ended without applying.
pub(super) enum BatchEnd {
    /// A backend is down: the run loop waits and comes back.
    Unavailable(HandlerError),
    /// The partition stalled (recorded).
    Stalled,
}

/// One consumer on the runtime. Share it behind an `Arc`; [`Subscriber::run`] drives it.
pub struct Subscriber {
    pub(super) handler: Arc<dyn Handler>,
    pub(super) store: Arc<dyn EventStore>,
    pub(super) status: Arc<dyn StatusStore>,
    pub(super) config: SubscriberConfig,
    live: Mutex<Live>,
    /// One lock per partition, held while a batch of it is applied: a direct
    /// [`Subscriber::catch_up`] beside the running loop never applies the same batch twice.
    pub(super) locks: Vec<tokio::sync::Mutex<()>>,
    /// Wakes the loop (resume, stop, and appends when a [`super::WakeHub`] is used).
    wake: Notify,
    /// Woken by a [`super::WakeHub`] instead of following a tail of its own.
    shared_wake: AtomicBool,
    stop: watch::Sender<bool>,
    /// Partition leases, when several instances share the consumer.
    pub(super) claims: Option<Arc<Claims>>,
    /// When the leases were last refreshed.
    pub(super) refreshed: Mutex<Option<std::time::Instant>>,
    /// The stalled partitions as last read from the status store, and when: a pass reads
    /// them at most every [`STATUS_REFRESH`] (this process's own stalls and resumes clear
    /// it at once).
    pub(super) stalled: Mutex<Option<(std::time::Instant, HashSet<u32>)>>,
}

/// How often a pass reads the stalled partitions from the status store: a `resume` from
/// another process takes effect within this (plus `idle_wait` when idle).
pub const STATUS_REFRESH: Duration = Duration::from_millis(250);

impl Subscriber {
    /// A subscriber applying `store`'s log to `handler`, recording its state in `status`.
    pub fn new(
        handler: Arc<dyn Handler>,
        store: Arc<dyn EventStore>,
        status: Arc<dyn StatusStore>,
        config: SubscriberConfig,
    ) -> Self {
        let partitions = store.partitions() as usize;
        Subscriber {
            handler,
            store,
            status,
            config,
            live: Mutex::new(Live {
                phase: Phase::Idle,
                partitions: vec![PartitionLive::default(); partitions],
            }),
            locks: (0..partitions)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            wake: Notify::new(),
            shared_wake: AtomicBool::new(false),
            stop: watch::channel(false).0,
            claims: None,
            refreshed: Mutex::new(None),
            stalled: Mutex::new(None),
        }
    }

    /// The store this subscriber reads.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Relies on a [`super::WakeHub`] for wake-ups instead of opening a tail of its own
    /// (set by [`super::WakeHub::register`] before [`Subscriber::run`]).
    pub(super) fn use_shared_wake(&self) {
        self.shared_wake.store(true, Ordering::Relaxed);
    }

    /// New events were appended: leaves a wake permit, so the loop makes a pass now, or
    /// right after the one it is in.
    pub fn appended(&self) {
        self.wake.notify_one();
    }

    /// Applies only the partitions this instance holds a lease on (scale-out), writing
    /// each batch with the lease's epoch as its fence.
    pub fn with_claims(mut self, claims: Arc<Claims>) -> Self {
        self.claims = Some(claims);
        self
    }

    /// The partition leases, when the consumer runs with them.
    pub fn claims(&self) -> Option<&Arc<Claims>> {
        self.claims.as_ref()
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        self.handler.name()
    }

    /// The consumer.
    pub fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
    }

    /// Where its state is recorded.
    pub fn status_store(&self) -> &Arc<dyn StatusStore> {
        &self.status
    }

    /// Whether its task runs in this process.
    pub fn phase(&self) -> Phase {
        self.live().phase
    }

    pub(super) fn live(&self) -> MutexGuard<'_, Live> {
        // Only plain field writes happen under this lock; a poisoned one is still sound.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_error(&self, partition: u32, error: Option<String>) {
        if let Some(p) = self.live().partitions.get_mut(partition as usize) {
            p.error = error;
        }
    }

    /// Asks the running task to end at the next batch boundary.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        self.wake.notify_waiters();
    }

    /// Clears every stall of this consumer (in the status store, so a `serve` in another
    /// process picks it up within `idle_wait`); returns how many partitions were stalled.
    pub async fn resume(&self) -> Result<u64, HandlerError> {
        let n = self.status.resume(self.name()).await?;
        self.forget_stalls();
        self.wake.notify_waiters();
        Ok(n)
    }

    /// Runs until `shutdown` turns true, its sender is dropped, or [`Subscriber::stop`]:
    /// catch up, then follow the live tail. Outages are waited out with backoff.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let name = self.name().to_owned();
        let partitions = self.store.partitions();
        self.live().phase = Phase::Running;
        if let Err(e) = self.status.set_running(&name, partitions, true).await {
            tracing::warn!(consumer = %name, error = %e, "cannot record the consumer as running");
        }
        tracing::info!(consumer = %name, partitions, "subscriber running");
        let mut stop = self.stop.subscribe();
        let mut tail: Option<EventStream> = None;
        let mut delay = self.config.backoff;
        while !*shutdown.borrow() && !*stop.borrow() {
            if tail.is_none() && !self.shared_wake.load(Ordering::Relaxed) {
                // Opened before catching up, so an append after the last read still wakes
                // the wait below.
                tail = match self.store.head().await {
                    Ok(head) => self.store.tail(head).await.ok(),
                    Err(_) => None,
                };
            }
            match self.pass(Some(&shutdown)).await {
                Ok(progressed) => {
                    delay = self.config.backoff;
                    if progressed {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, ?delay,
                        "backend unavailable; subscriber waits");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        r = shutdown.changed() => if r.is_err() { break },
                        _ = stop.changed() => {}
                        _ = self.wake.notified() => {}
                    }
                    delay = (delay * 2).min(self.config.max_backoff);
                    continue;
                }
            }
            if !self.wait(&mut tail, &mut shutdown, &mut stop).await {
                break;
            }
        }
        if let Some(claims) = &self.claims {
            // Hand the partitions over at once instead of after the TTL.
            claims.release_all().await;
        }
        self.live().phase = Phase::Stopped;
        if let Err(e) = self.status.set_running(&name, partitions, false).await {
            tracing::warn!(consumer = %name, error = %e, "cannot record the consumer as stopped");
        }
        tracing::info!(consumer = %name, "subscriber stopped");
    }

    /// Waits for the next tail item, `idle_wait`, a wake, stop or shutdown; false when the
    /// shutdown sender is gone.
    async fn wait(
        &self,
        tail: &mut Option<EventStream>,
        shutdown: &mut watch::Receiver<bool>,
        stop: &mut watch::Receiver<bool>,
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
            _ = stop.changed() => return true,
            _ = self.wake.notified() => return true,
        };
        match woken {
            Ok(Some(Ok(_))) => {
                // One pass covers every event already delivered: drop the rest of the
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
            // An ended or failed tail (an undecodable entry, a lost connection) is reopened
            // at the head on the next round.
            Ok(Some(Err(_)) | None) => *tail = None,
            Err(_) => {}
        }
        true
    }
}

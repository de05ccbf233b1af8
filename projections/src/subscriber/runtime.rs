//! The driver: catch-up, tail, batches, retries, stalls, resume, stop and status for one
//! consumer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jobsource_eventstore::{EventStore, EventStream, LogId, Position};
use tokio::sync::{watch, Notify};

use super::{Handler, HandlerError, Outcome, Recorded, StatusRow, StatusStore};

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
struct PartitionLive {
    /// Last checkpoint read (shown when it cannot be read).
    checkpoint: LogId,
    /// The current error (retries, outage), cleared by the next applied batch.
    error: Option<String>,
}

struct Live {
    phase: Phase,
    partitions: Vec<PartitionLive>,
}

/// Why a partition's batch ended without applying.
enum BatchEnd {
    /// A backend is down: the run loop waits and comes back.
    Unavailable(HandlerError),
    /// The partition stalled (recorded).
    Stalled,
}

/// One consumer on the runtime. Share it behind an `Arc`; [`Subscriber::run`] drives it.
pub struct Subscriber {
    handler: Arc<dyn Handler>,
    store: Arc<dyn EventStore>,
    status: Arc<dyn StatusStore>,
    config: SubscriberConfig,
    live: Mutex<Live>,
    /// One lock per partition, held while a batch of it is applied: a direct
    /// [`Subscriber::catch_up`] beside the running loop never applies the same batch twice.
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Wakes the loop (resume, stop).
    wake: Notify,
    stop: watch::Sender<bool>,
}

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
            stop: watch::channel(false).0,
        }
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

    fn live(&self) -> MutexGuard<'_, Live> {
        // Only plain field writes happen under this lock; a poisoned one is still sound.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_error(&self, partition: u32, error: Option<String>) {
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
            if tail.is_none() {
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

    /// Applies everything the log holds past the checkpoints (stalled partitions are
    /// skipped); returns events applied, or the first outage after every partition got as
    /// far as it could. Tests and the CLI's `catch-up` call it; [`Subscriber::run`] loops.
    pub async fn catch_up(&self) -> Result<u64, HandlerError> {
        let mut total = 0;
        loop {
            let (applied, progressed) = self.pass_counted(None).await?;
            total += applied;
            if !progressed {
                return Ok(total);
            }
        }
    }

    /// One batch of every partition that is not stalled; true when any moved.
    async fn pass(&self, shutdown: Option<&watch::Receiver<bool>>) -> Result<bool, HandlerError> {
        self.pass_counted(shutdown).await.map(|(_, p)| p)
    }

    async fn pass_counted(
        &self,
        shutdown: Option<&watch::Receiver<bool>>,
    ) -> Result<(u64, bool), HandlerError> {
        let recorded = self.status.load(self.name()).await?;
        let partitions: Vec<u32> = (0..self.store.partitions())
            .filter(|p| !matches!(recorded.get(p), Some(Recorded::Stalled { .. })))
            .collect();
        let results: Vec<Result<(u64, bool), BatchEnd>> = futures::stream::iter(partitions)
            .map(|p| self.batch_with_retries(p, shutdown))
            .buffer_unordered(self.config.parallel.max(1))
            .collect()
            .await;
        let (mut applied, mut progressed, mut outage) = (0, false, None);
        for r in results {
            match r {
                Ok((n, moved)) => {
                    applied += n;
                    progressed |= moved;
                }
                Err(BatchEnd::Unavailable(e)) => {
                    outage.get_or_insert(e);
                }
                Err(BatchEnd::Stalled) => {}
            }
        }
        match outage {
            Some(e) if !progressed => Err(e),
            _ => Ok((applied, progressed)),
        }
    }

    /// One batch of `partition`, retried up to `max_attempts`, then a recorded stall.
    /// Returns (events applied, whether the checkpoint moved).
    async fn batch_with_retries(
        &self,
        partition: u32,
        shutdown: Option<&watch::Receiver<bool>>,
    ) -> Result<(u64, bool), BatchEnd> {
        let Some(lock) = self.locks.get(partition as usize) else {
            return Ok((0, false));
        };
        let _guard = lock.lock().await;
        let mut delay = self.config.backoff;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let (failure, first) = match self.one_batch(partition).await {
                Ok((n, moved)) => {
                    if n > 0 {
                        let name = self.name().to_owned();
                        metrics::histogram!(BATCH_DURATION, "projection" => name.clone())
                            .record(started.elapsed());
                        metrics::counter!(EVENTS_APPLIED, "projection" => name).increment(n);
                    }
                    if moved {
                        self.set_error(partition, None);
                    }
                    return Ok((n, moved));
                }
                Err((e @ HandlerError::Unavailable(_), _)) => {
                    self.set_error(partition, Some(e.to_string()));
                    return Err(BatchEnd::Unavailable(e));
                }
                Err((HandlerError::Failed { message, position }, first)) => {
                    (message, position.or(first))
                }
            };
            let at = first.as_deref().unwrap_or("?");
            if attempt < self.config.max_attempts {
                tracing::warn!(consumer = self.name(), partition, attempt, position = at,
                    error = %failure, "batch failed; retrying");
                self.set_error(
                    partition,
                    Some(format!("at {at} (attempt {attempt}): {failure}")),
                );
                let stopping = async {
                    match shutdown {
                        Some(s) => {
                            let mut s = s.clone();
                            let _ = s.wait_for(|v| *v).await;
                        }
                        None => futures::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopping => return Ok((0, false)),
                }
                delay = (delay * 2).min(self.config.max_backoff);
                attempt += 1;
                continue;
            }
            tracing::error!(consumer = self.name(), partition, position = at, error = %failure,
                "consumer stalled on this event");
            if let Err(e) = self
                .status
                .stall(self.name(), partition, &failure, first.as_deref())
                .await
            {
                // Not recorded: wait for the backend; the batch is tried afresh then.
                return Err(BatchEnd::Unavailable(e));
            }
            self.set_error(partition, Some(format!("at {at}: {failure}")));
            metrics::counter!("jobsource_projection_stalls_total", "projection" => self.name().to_owned())
                .increment(1);
            return Err(BatchEnd::Stalled);
        }
    }

    /// Reads the checkpoint and the next batch and applies it. On failure also returns
    /// the position of the batch's first event (where a stall is shown).
    async fn one_batch(
        &self,
        partition: u32,
    ) -> Result<(u64, bool), (HandlerError, Option<String>)> {
        let after = self
            .handler
            .checkpoint(partition)
            .await
            .map_err(|e| (e, None))?;
        if let Some(p) = self.live().partitions.get_mut(partition as usize) {
            p.checkpoint = after;
        }
        let events = match self
            .store
            .read_partition(partition, after, self.config.batch)
            .await
        {
            Ok(events) => events,
            Err(e) => {
                let e = HandlerError::from(e);
                let at = match &e {
                    HandlerError::Failed { position, .. } => position.clone(),
                    HandlerError::Unavailable(_) => return Err((e, None)),
                };
                // An undecodable entry fails the whole read: take the events before it one
                // at a time, so the partition stops right at the poison, not a batch early.
                match self.store.read_partition(partition, after, 1).await {
                    Ok(one) if !one.is_empty() && self.config.batch > 1 => one,
                    _ => return Err((e, at)),
                }
            }
        };
        let Some(first) = events.first().map(|e| e.position.to_string()) else {
            return Ok((0, false));
        };
        match self.handler.apply(partition, after, &events).await {
            Ok(Outcome::Applied) => Ok((events.len() as u64, true)),
            Ok(Outcome::Moved) => Ok((0, true)),
            Err(e) => Err((e, Some(first))),
        }
    }

    /// Status of every partition: checkpoint, lag (capped at `lag_cap`), state, error.
    pub async fn status(&self, lag_cap: usize) -> Vec<StatusRow> {
        let name = self.name().to_owned();
        let (recorded, store_error) = match self.status.load(&name).await {
            Ok(r) => (r, None),
            Err(e) => (
                Default::default(),
                Some(format!("cannot read the status: {e}")),
            ),
        };
        let head = self.store.head().await.ok();
        let phase = self.phase();
        let mut rows = Vec::with_capacity(self.locks.len());
        for p in 0..self.store.partitions() {
            let live = self
                .live()
                .partitions
                .get(p as usize)
                .cloned()
                .unwrap_or_default();
            let (checkpoint, mut last_error) = match self.handler.checkpoint(p).await {
                Ok(c) => (c, live.error.clone()),
                Err(e) => (
                    live.checkpoint,
                    Some(format!("cannot read the checkpoint: {e}")),
                ),
            };
            let lag = match &head {
                Some(h) if checkpoint >= h.after(p) => 0,
                _ => self
                    .store
                    .read_partition(p, checkpoint, lag_cap)
                    .await
                    // An unreadable entry (the likely cause of a stall) counts as the cap.
                    .map_or(lag_cap as u64, |e| e.len() as u64),
            };
            let (state, error_position) = match recorded.get(&p) {
                Some(Recorded::Stalled { error, position }) => {
                    last_error = Some(error.clone());
                    ("stalled", position.clone())
                }
                _ if phase == Phase::Stopped => ("stopped", None),
                _ if phase == Phase::Running => ("running", None),
                Some(r) => (r.as_str(), None),
                None => ("running", None),
            };
            if last_error.is_none() {
                last_error = store_error.clone();
            }
            rows.push(StatusRow {
                consumer: name.clone(),
                partition: p,
                checkpoint: Position::new(p, checkpoint).to_string(),
                lag,
                state: state.to_owned(),
                last_error,
                error_position,
            });
        }
        rows
    }
}

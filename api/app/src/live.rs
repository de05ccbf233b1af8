//! The live feed: one tail of the partition logs, fanned out to every WebSocket client.
//!
//! A single task ([`LiveFeed::run`]) follows the store from its head and publishes each
//! event on a `tokio::sync::broadcast` channel, so a thousand clients cost one reader,
//! never a Redis read each. The sender never waits for anyone: a client that falls more
//! than [`LiveConfig::buffer`] events behind sees `Lagged` and is closed by its handler
//! (`http::ws`), which also bounds what it queues for the socket by the same number.
//!
//! When the tail ends (the Redis tail ends after an undecodable entry) the feed reopens it
//! after a pause: from where it stopped when it ended cleanly, from the head when it ended
//! on an unreadable entry (re-reading it would end the tail again, forever). Clients see
//! nothing of that beyond the skipped entry. The feed also remembers which machine each
//! running job is assigned to, so machine subscriptions see that job's events, and it
//! tells its clients when it stops ([`LiveFeed::closed`]), so they close with "going away"
//! instead of lingering after shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use jobsource_eventstore::{Cursor, EventStore, RecordedEvent};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// Pause before reopening an ended or failed tail.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Limits of the feed and of each WebSocket client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    /// Events a client may fall behind (and messages it may have queued for its socket)
    /// before it is closed as too slow (default 4096).
    pub buffer: usize,
    /// How often the server pings each client (default 25 s).
    pub ping_every: Duration,
    /// How long a client has to answer a ping before it is dropped (default 20 s).
    pub pong_timeout: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            buffer: 4096,
            ping_every: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(20),
        }
    }
}

/// One event as the feed publishes it.
#[derive(Debug)]
pub struct LiveEvent {
    /// The stored event.
    pub event: RecordedEvent,
    /// The job's id (job events).
    pub job_id: Option<Uuid>,
    /// The workflow's id (workflow events).
    pub workflow_id: Option<Uuid>,
    /// The machine the job is (or, for its terminal event, was last) assigned to; for an
    /// event of a machine's own stream (`machine-<id>`), that machine.
    pub machine_id: Option<String>,
    /// The `/ws` message, serialized once for every client.
    wire: OnceLock<Option<Bytes>>,
}

impl LiveEvent {
    /// Wraps a stored event; job, workflow and (own-stream) machine ids come from its
    /// stream name.
    pub fn new(event: RecordedEvent, machine_id: Option<String>) -> Self {
        let id = |prefix: &str| {
            event
                .envelope
                .stream
                .strip_prefix(prefix)
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        LiveEvent {
            job_id: id("job-"),
            workflow_id: id("workflow-"),
            machine_id: machine_id.or_else(|| {
                event
                    .envelope
                    .stream
                    .strip_prefix("machine-")
                    .map(str::to_owned)
            }),
            event,
            wire: OnceLock::new(),
        }
    }

    /// The seed's `/ws` message for this event, `{"type":<event type>,"timestamp":<ms>,
    /// "job_id"|"workflow_id"|"machine_id":..,"data":<envelope>}` (`machine_id` for the
    /// events of a machine's own stream); `None` for events of other streams.
    /// Serialized on first use and shared (cheap clones) by every client; always UTF-8.
    pub fn wire(&self) -> Option<&Bytes> {
        self.wire
            .get_or_init(|| {
                let env = &self.event.envelope;
                let (field, id) = match (self.job_id, self.workflow_id, &self.machine_id) {
                    (Some(job), _, _) => ("job_id", serde_json::json!(job)),
                    (None, Some(workflow), _) => ("workflow_id", serde_json::json!(workflow)),
                    (None, None, Some(machine)) => ("machine_id", serde_json::json!(machine)),
                    (None, None, None) => return None,
                };
                let message = serde_json::json!({
                    "type": env.event_type,
                    "timestamp": env.occurred_at.timestamp_millis(),
                    field: id,
                    "data": env,
                });
                Some(Bytes::from(message.to_string()))
            })
            .as_ref()
    }
}

/// The fan-out of the live log.
pub struct LiveFeed {
    config: LiveConfig,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    machines: Mutex<HashMap<Uuid, String>>,
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFeed")
            .field("config", &self.config)
            .field("clients", &self.sender.receiver_count())
            .field("closed", &*self.closed.borrow())
            .finish()
    }
}

impl LiveFeed {
    /// A feed whose clients may fall at most `buffer` events behind (other limits default).
    pub fn new(buffer: usize) -> Arc<Self> {
        Self::with_config(LiveConfig {
            buffer,
            ..LiveConfig::default()
        })
    }

    /// A feed with every limit given.
    pub fn with_config(config: LiveConfig) -> Arc<Self> {
        let config = LiveConfig {
            buffer: config.buffer.max(1),
            ..config
        };
        let (sender, _) = broadcast::channel(config.buffer);
        let (closed, _) = watch::channel(false);
        Arc::new(LiveFeed {
            config,
            sender,
            machines: Mutex::new(HashMap::new()),
            closed,
        })
    }

    /// The feed's limits.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// A new client's receiver (events published from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }

    /// Number of receivers (connected clients).
    pub fn clients(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Turns `true` once the feed has stopped; clients should then close.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Stops serving clients: every [`LiveFeed::closed`] receiver sees `true`.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Publishes one stored event to every client.
    pub fn publish(&self, event: RecordedEvent) {
        let mut live = LiveEvent::new(event, None);
        if let Some(job) = live.job_id {
            let env = &live.event.envelope;
            live.machine_id = self.track_machine(job, &env.event_type, &env.data);
        }
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(Arc::new(live));
    }

    /// Updates the job -> machine map with a job event; returns the job's machine.
    fn track_machine(
        &self,
        job: Uuid,
        kind: &str,
        data: &jobsource_eventstore::Payload,
    ) -> Option<String> {
        let mut machines = self.machines.lock().unwrap_or_else(PoisonError::into_inner);
        if kind == "job_assigned" {
            if let Some(serde_json::Value::String(m)) = data.field("machine_id") {
                machines.insert(job, m);
            }
        }
        let machine = machines.get(&job).cloned();
        let terminal = matches!(kind, "job_completed" | "job_cancelled")
            || (kind == "job_failed"
                && data.field("will_retry").and_then(|w| w.as_bool()) == Some(false));
        if terminal {
            machines.remove(&job);
        }
        machine
    }

    /// Follows `store` from its head and publishes until `shutdown` turns true (or its
    /// sender goes away); then closes the feed ([`LiveFeed::close`]).
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn EventStore>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut resume: Option<Cursor> = None;
        'feed: while !*shutdown.borrow() {
            let from = match resume.take() {
                Some(cursor) => Ok(cursor),
                None => store.head().await,
            };
            let opened = match from {
                Ok(cursor) => store.tail(cursor.clone()).await.map(|t| (cursor, t)),
                Err(e) => Err(e),
            };
            match opened {
                Ok((mut at, mut tail)) => {
                    let mut last_failed = false;
                    loop {
                        tokio::select! {
                            next = tail.next() => match next {
                                Some(Ok(e)) => {
                                    at.advance(e.position);
                                    last_failed = false;
                                    self.publish(e);
                                }
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "live feed: unreadable entry or read error");
                                    last_failed = true;
                                }
                                None => break,
                            },
                            _ = shutdown.changed() => break 'feed,
                        }
                    }
                    if last_failed {
                        tracing::warn!(
                            "live feed: the tail ended on an unreadable entry; reopening at the head \
                             (live clients miss what was appended meanwhile)"
                        );
                    } else {
                        tracing::info!("live feed: the tail ended; reopening where it stopped");
                        resume = Some(at);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "live feed cannot follow the log; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(REOPEN_AFTER) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobsource_eventstore::{
        AppendRequest, EventStream, ExpectedVersion, MemoryStore, NewEvent, StoreConfig, StoreError,
    };
    use serde_json::json;

    async fn append(store: &MemoryStore, stream: &str, kind: &str, data: serde_json::Value) {
        let version = store.stream_version(stream).await.unwrap();
        store
            .append(AppendRequest::new(
                stream.to_owned(),
                ExpectedVersion::Exact(version),
                vec![NewEvent::new(kind, 2, data)],
            ))
            .await
            .unwrap();
    }

    async fn next(rx: &mut broadcast::Receiver<Arc<LiveEvent>>) -> Arc<LiveEvent> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("feed open")
    }

    #[tokio::test]
    async fn publishes_from_the_head_tracks_machines_and_closes_on_shutdown() {
        let store = Arc::new(MemoryStore::new(StoreConfig::default()));
        let job = Uuid::now_v7();
        let stream = format!("job-{job}");
        // Before the feed starts: not published.
        append(&store, &stream, "job_submitted", json!({"job_id": job})).await;
        let feed = LiveFeed::new(16);
        let mut rx = feed.subscribe();
        let mut closed = feed.closed();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(feed.clone().run(store.clone(), shutdown));
        // The feed opens its tail asynchronously; wait until it is following.
        let mut published = false;
        for _ in 0..100 {
            append(
                &store,
                &format!("workflow-{}", Uuid::now_v7()),
                "workflow_created",
                json!({}),
            )
            .await;
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
                published = true;
                break;
            }
        }
        assert!(published, "the feed follows the store");
        while rx.try_recv().is_ok() {}
        append(
            &store,
            &stream,
            "job_assigned",
            json!({"job_id": job, "worker_id": "w", "machine_id": "m1", "attempt": 1}),
        )
        .await;
        append(
            &store,
            &stream,
            "job_progress",
            json!({"job_id": job, "progress": 5}),
        )
        .await;
        append(&store, &stream, "job_completed", json!({"job_id": job})).await;
        append(
            &store,
            &stream,
            "job_progress",
            json!({"job_id": job, "progress": 6}),
        )
        .await;
        let got: Vec<_> = [
            next(&mut rx).await,
            next(&mut rx).await,
            next(&mut rx).await,
            next(&mut rx).await,
        ]
        .into_iter()
        .map(|e| {
            (
                e.event.envelope.event_type.clone(),
                e.job_id,
                e.machine_id.clone(),
            )
        })
        .collect();
        let m1 = Some("m1".to_owned());
        assert_eq!(
            got,
            [
                ("job_assigned".to_owned(), Some(job), m1.clone()),
                ("job_progress".to_owned(), Some(job), m1.clone()),
                ("job_completed".to_owned(), Some(job), m1),
                ("job_progress".to_owned(), Some(job), None),
            ]
        );
        assert!(!*closed.borrow());
        stop.send_replace(true);
        task.await.unwrap();
        closed.wait_for(|c| *c).await.unwrap();
    }

    /// A store whose tails end after `take` events, optionally on an unreadable entry.
    struct Ending {
        inner: MemoryStore,
        take: usize,
        fail: bool,
        tails: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl EventStore for Ending {
        fn partitions(&self) -> u32 {
            self.inner.partitions()
        }
        async fn append(
            &self,
            r: AppendRequest,
        ) -> Result<jobsource_eventstore::AppendResult, StoreError> {
            self.inner.append(r).await
        }
        async fn recall(
            &self,
            stream: &str,
            key: &jobsource_eventstore::Idempotency,
        ) -> Result<Option<jobsource_eventstore::AppendResult>, StoreError> {
            self.inner.recall(stream, key).await
        }
        async fn reserve(&self, name: &str, value: &str) -> Result<String, StoreError> {
            self.inner.reserve(name, value).await
        }
        async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
            self.inner.stream_version(stream).await
        }
        async fn read_stream(
            &self,
            stream: &str,
            from: u64,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.inner.read_stream(stream, from, limit).await
        }
        async fn read_partition(
            &self,
            partition: u32,
            after: jobsource_eventstore::LogId,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.inner.read_partition(partition, after, limit).await
        }
        async fn partition_len(&self, partition: u32) -> Result<u64, StoreError> {
            self.inner.partition_len(partition).await
        }
        async fn head(&self) -> Result<Cursor, StoreError> {
            self.inner.head().await
        }
        async fn claim(
            &self,
            p: u32,
            spec: &jobsource_eventstore::ClaimSpec,
        ) -> Result<Option<jobsource_eventstore::Claimed>, StoreError> {
            self.inner.claim(p, spec).await
        }
        async fn renew_lease(
            &self,
            stream: &str,
            worker: &str,
            now: u64,
        ) -> Result<Option<u64>, StoreError> {
            self.inner.renew_lease(stream, worker, now).await
        }
        async fn lease(
            &self,
            stream: &str,
        ) -> Result<Option<jobsource_eventstore::LeaseEntry>, StoreError> {
            self.inner.lease(stream).await
        }
        async fn due_leases(
            &self,
            p: u32,
            now: u64,
            limit: usize,
        ) -> Result<Vec<jobsource_eventstore::LeaseEntry>, StoreError> {
            self.inner.due_leases(p, now, limit).await
        }
        async fn leases_of_machine(
            &self,
            machine: &str,
        ) -> Result<Vec<jobsource_eventstore::LeaseEntry>, StoreError> {
            self.inner.leases_of_machine(machine).await
        }
        async fn ready_hint(&self, now: u64) -> Result<Vec<bool>, StoreError> {
            self.inner.ready_hint(now).await
        }
        async fn tail(&self, from: Cursor) -> Result<EventStream, StoreError> {
            self.tails.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let events = self.inner.tail(from).await?.take(self.take);
            let end = futures::stream::iter(
                self.fail
                    .then(|| Err(StoreError::Backend("undecodable entry".into()))),
            );
            Ok(Box::pin(events.chain(end)))
        }
    }

    fn ending(take: usize, fail: bool) -> Arc<Ending> {
        Arc::new(Ending {
            inner: MemoryStore::new(StoreConfig::default()),
            take,
            fail,
            tails: Default::default(),
        })
    }

    async fn tails_opened(store: &Ending, n: usize) {
        for _ in 0..500 {
            if store.tails.load(std::sync::atomic::Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the feed never opened tail #{n}");
    }

    async fn progress(store: &Ending, stream: &str, n: u64) {
        append(&store.inner, stream, "job_progress", json!({"progress": n})).await;
    }

    #[tokio::test]
    async fn an_ended_tail_is_reopened_where_it_stopped() {
        let store = ending(2, false);
        let feed = LiveFeed::new(64);
        let mut rx = feed.subscribe();
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(feed.clone().run(store.clone(), shutdown));
        tails_opened(&store, 1).await;
        let stream = format!("job-{}", Uuid::now_v7());
        // Five events at once: the tail ends after two, the rest come from the reopened
        // tails (resumed at the cursor, not at the head), in order.
        for n in 1..=5 {
            progress(&store, &stream, n).await;
        }
        for n in 1..=5u64 {
            let e = next(&mut rx).await;
            assert_eq!(e.event.envelope.version, n);
        }
    }

    #[tokio::test]
    async fn a_tail_that_ended_on_an_unreadable_entry_is_reopened_at_the_head() {
        let store = ending(1, true);
        let feed = LiveFeed::new(64);
        let mut rx = feed.subscribe();
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(feed.clone().run(store.clone(), shutdown));
        tails_opened(&store, 1).await;
        let stream = format!("job-{}", Uuid::now_v7());
        progress(&store, &stream, 1).await;
        assert_eq!(next(&mut rx).await.event.envelope.version, 1);
        // Appended while the feed pauses: skipped with the bad entry's tail.
        progress(&store, &stream, 2).await;
        tails_opened(&store, 2).await;
        progress(&store, &stream, 3).await;
        assert_eq!(next(&mut rx).await.event.envelope.version, 3);
    }
}

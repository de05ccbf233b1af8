//! The subscriber runtime with an in-memory consumer: a poison event stalls exactly its
//! partition with the error and position, `resume` finishes it, `stop` shows `stopped`,
//! outages are waited out without stalling, and a direct catch-up beside the running loop
//! (many appending tasks meanwhile) applies every event exactly once.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, LogId, MemoryStore, NewEvent, RecordedEvent,
    StoreConfig,
};
use jobsource_projections::subscriber::{
    Handler, HandlerError, MemoryStatusStore, Outcome, Subscriber, SubscriberConfig, WakeHub,
};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

/// Records every applied event id (twice = a bug), refuses poison events until fixed,
/// answers `Unavailable` for the first `outages` batches.
#[derive(Default)]
struct Recorder {
    checkpoints: Mutex<HashMap<u32, LogId>>,
    applied: Mutex<Vec<Uuid>>,
    fixed: AtomicBool,
    outages: AtomicU32,
    /// Batches refused at a poison event.
    failures: AtomicU32,
}

#[async_trait]
impl Handler for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError> {
        Ok(self
            .checkpoints
            .lock()
            .unwrap()
            .get(&partition)
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
        if self
            .outages
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::Unavailable("injected outage".into()));
        }
        // Yield inside the batch so concurrent callers would interleave if they could.
        tokio::task::yield_now().await;
        let mut checkpoints = self.checkpoints.lock().unwrap();
        let at = checkpoints.entry(partition).or_insert(LogId::ZERO);
        if *at != after {
            return Ok(Outcome::Moved);
        }
        let mut applied = self.applied.lock().unwrap();
        for e in events {
            if e.envelope.data.to_value()["poison"] == json!(true)
                && !self.fixed.load(Ordering::SeqCst)
            {
                // Save the prefix, then fail at the poison event.
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(HandlerError::Failed {
                    message: "poison event".into(),
                    position: Some(e.position.to_string()),
                });
            }
            applied.push(e.envelope.event_id);
            *at = e.position.id;
        }
        Ok(Outcome::Applied)
    }
}

impl Recorder {
    fn applied(&self) -> Vec<Uuid> {
        self.applied.lock().unwrap().clone()
    }
}

fn store(partitions: u32) -> Arc<dyn EventStore> {
    Arc::new(MemoryStore::new(StoreConfig {
        partitions,
        ..StoreConfig::default()
    }))
}

async fn append(store: &dyn EventStore, poison: bool) -> (String, Uuid) {
    let stream = format!("job-{}", Uuid::now_v7());
    store
        .append(AppendRequest::new(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("x", 1, json!({"poison": poison}))],
        ))
        .await
        .unwrap();
    let id = store.read_stream_all(&stream).await.unwrap()[0]
        .envelope
        .event_id;
    (stream, id)
}

/// `tasks` tasks appending `each` events apiece (yielding in between), concurrently.
fn spawn_writers(
    store: &Arc<dyn EventStore>,
    tasks: usize,
    each: usize,
) -> Vec<tokio::task::JoinHandle<Vec<Uuid>>> {
    (0..tasks)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..each {
                    ids.push(append(&*store, false).await.1);
                    tokio::task::yield_now().await;
                }
                ids
            })
        })
        .collect()
}

fn config() -> SubscriberConfig {
    SubscriberConfig {
        batch: 7,
        max_attempts: 3,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        idle_wait: Duration::from_millis(200),
        parallel: 4,
    }
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_once(applied: &[Uuid]) {
    let unique: HashSet<_> = applied.iter().collect();
    assert_eq!(unique.len(), applied.len(), "an event was applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stalls_its_partition_until_resumed_and_stop_shows_stopped() {
    let store = store(4);
    let mut ids = Vec::new();
    let mut poison_stream = String::new();
    for i in 0..40 {
        let (stream, id) = append(&*store, i == 13).await;
        if i == 13 {
            poison_stream = stream;
        }
        ids.push(id);
    }
    let poisoned = store.partition_of(&poison_stream);
    let poison_position = store.read_stream_all(&poison_stream).await.unwrap()[0]
        .position
        .to_string();
    let handler = Arc::new(Recorder::default());
    let sub = Arc::new(Subscriber::new(
        handler.clone(),
        store.clone(),
        Arc::new(MemoryStatusStore::new()),
        config(),
    ));
    let (stop_all, rx) = watch::channel(false);
    let task = tokio::spawn(sub.clone().run(rx));

    wait_until("the stall", || async {
        sub.status(1000).await.iter().any(|r| r.state == "stalled")
    })
    .await;
    // Live events on other partitions keep flowing while one partition is stalled.
    for _ in 0..10 {
        ids.push(append(&*store, false).await.1);
    }
    wait_until("every other partition caught up", || async {
        sub.status(1000)
            .await
            .iter()
            .all(|r| r.partition == poisoned || r.lag == 0)
    })
    .await;
    let rows = sub.status(1000).await;
    let stalled: Vec<_> = rows.iter().filter(|r| r.state == "stalled").collect();
    assert_eq!(stalled.len(), 1, "{rows:?}");
    assert_eq!(stalled[0].partition, poisoned);
    assert_eq!(
        stalled[0].error_position.as_deref(),
        Some(&*poison_position)
    );
    assert!(stalled[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("poison event"));
    assert!(stalled[0].lag > 0);
    assert!(rows
        .iter()
        .filter(|r| r.partition != poisoned)
        .all(|r| r.state == "running"));

    // Still stalled a while later: never skipped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sub.status(1000).await[poisoned as usize].state, "stalled");

    handler.fixed.store(true, Ordering::SeqCst);
    assert_eq!(sub.resume().await.unwrap(), 1);
    wait_until("everything applied", || async {
        handler.applied().len() == ids.len()
    })
    .await;
    let applied = handler.applied();
    assert_once(&applied);
    assert_eq!(
        applied.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    assert!(sub.status(1000).await.iter().all(|r| r.state == "running"));

    sub.stop();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task ends after stop")
        .unwrap();
    assert!(sub.status(1000).await.iter().all(|r| r.state == "stopped"));
    drop(stop_all);
}

/// A pass reads the stalled partitions from the status store at most every 250 ms, so a
/// stall or a resume made in this process must take effect on the very next pass: the
/// stalled partition is not tried again (no second round of attempts, no second stall),
/// and after `resume` the next catch-up applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_and_a_resume_in_this_process_take_effect_on_the_next_pass() {
    let store = store(4);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(append(&*store, i == 5).await.1);
    }
    let handler = Arc::new(Recorder::default());
    let sub = Subscriber::new(
        handler.clone(),
        store.clone(),
        Arc::new(MemoryStatusStore::new()),
        config(),
    );
    sub.catch_up().await.unwrap();
    assert_eq!(
        handler.failures.load(Ordering::SeqCst),
        config().max_attempts,
        "the stalled partition was tried again after its stall"
    );
    assert_eq!(sub.catch_up().await.unwrap(), 0);
    assert_eq!(
        handler.failures.load(Ordering::SeqCst),
        config().max_attempts
    );
    assert!(handler.applied().len() < ids.len());

    handler.fixed.store(true, Ordering::SeqCst);
    assert_eq!(sub.resume().await.unwrap(), 1);
    sub.catch_up().await.unwrap();
    let applied = handler.applied();
    assert_once(&applied);
    assert_eq!(
        applied.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>(),
        "the resumed partition was not applied by the next catch-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_are_waited_out_without_stalling() {
    let store = store(2);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(append(&*store, false).await.1);
    }
    let handler = Arc::new(Recorder::default());
    // More outages than attempts: an outage is not the event's fault.
    handler.outages.store(12, Ordering::SeqCst);
    let sub = Arc::new(Subscriber::new(
        handler.clone(),
        store.clone(),
        Arc::new(MemoryStatusStore::new()),
        config(),
    ));
    let (_stop, rx) = watch::channel(false);
    let task = tokio::spawn(sub.clone().run(rx));
    wait_until("everything applied", || async {
        handler.applied().len() == ids.len()
    })
    .await;
    assert_once(&handler.applied());
    assert!(sub.status(100).await.iter().all(|r| r.state == "running"));
    sub.stop();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_beside_the_running_loop_applies_every_event_once() {
    let store = store(4);
    let handler = Arc::new(Recorder::default());
    let sub = Arc::new(Subscriber::new(
        handler.clone(),
        store.clone(),
        Arc::new(MemoryStatusStore::new()),
        config(),
    ));
    let (_stop, rx) = watch::channel(false);
    let task = tokio::spawn(sub.clone().run(rx));
    let writers = spawn_writers(&store, 16, 40);
    let catchers: Vec<_> = (0..4)
        .map(|_| {
            let sub = sub.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    sub.catch_up().await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.unwrap());
    }
    for c in catchers {
        c.await.unwrap();
    }
    sub.catch_up().await.unwrap();
    let applied = handler.applied();
    assert_once(&applied);
    assert_eq!(applied.len(), ids.len());
    sub.stop();
    task.await.unwrap();
}

/// Two consumers woken only by one shared [`WakeHub`] (their `idle_wait` is ten minutes,
/// so nothing else could wake them in time): every event appended while they run, by
/// several tasks at once, reaches both, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_wake_hub_wakes_every_registered_consumer() {
    let store = store(4);
    let sleepy = SubscriberConfig {
        idle_wait: Duration::from_secs(600),
        ..config()
    };
    let handlers = [Arc::new(Recorder::default()), Arc::new(Recorder::default())];
    let subs: Vec<Arc<Subscriber>> = handlers
        .iter()
        .map(|h| {
            Arc::new(Subscriber::new(
                h.clone(),
                store.clone(),
                Arc::new(MemoryStatusStore::new()),
                sleepy.clone(),
            ))
        })
        .collect();
    let hub = WakeHub::new();
    for s in &subs {
        hub.register(s);
    }
    let (stop_all, rx) = watch::channel(false);
    let mut tasks = vec![hub.spawn(store.clone(), rx.clone())];
    tasks.extend(subs.iter().map(|s| tokio::spawn(s.clone().run(rx.clone()))));
    // Let both finish their first (empty) pass and go to sleep on the hub.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let writers = spawn_writers(&store, 8, 25);
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.unwrap());
    }
    for h in &handlers {
        wait_until("both consumers applied every event", || async {
            h.applied().len() >= ids.len()
        })
        .await;
        let applied = h.applied();
        assert_once(&applied);
        let got: HashSet<_> = applied.into_iter().collect();
        assert!(ids.iter().all(|id| got.contains(id)));
    }
    stop_all.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}

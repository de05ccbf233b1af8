//! One live tail per process that wakes every subscriber, instead of one tail each.
//!
//! A subscriber reads its batches from the partition logs itself; the tail only tells it
//! when to look. With a tail each, every event was sent by Redis and decoded by this
//! process once per consumer just to be dropped. The hub follows the log once and, for
//! each burst of appends, leaves a wake permit with every subscriber registered with it
//! (`Notify::notify_one` keeps the permit when the subscriber is busy, so an append that
//! lands during a pass still triggers the next one). A subscriber's `idle_wait` stays its
//! fallback when the hub's tail is down.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use jobsource_eventstore::EventStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Subscriber;

/// The shared wake-up source of a process's subscribers.
#[derive(Default)]
pub struct WakeHub {
    subscribers: Mutex<Vec<Weak<Subscriber>>>,
}

impl WakeHub {
    /// A hub with no subscribers yet.
    pub fn new() -> Arc<WakeHub> {
        Arc::new(WakeHub::default())
    }

    /// Wakes `subscriber` on appends from now on (it stops opening a tail of its own).
    pub fn register(&self, subscriber: &Arc<Subscriber>) {
        subscriber.use_shared_wake();
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::downgrade(subscriber));
    }

    /// Wakes every registered subscriber that is still alive.
    pub fn wake_all(&self) {
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        subs.retain(|s| match s.upgrade() {
            Some(s) => {
                s.appended();
                true
            }
            None => false,
        });
    }

    /// Follows `store`'s log until `shutdown`, waking the subscribers on each burst of
    /// appends. A failed or ended tail is reopened at the head with backoff, and every
    /// subscriber is woken then too (appends in the gap would otherwise wait for their
    /// `idle_wait`).
    pub fn spawn(
        self: &Arc<Self>,
        store: Arc<dyn EventStore>,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !*shutdown.borrow() {
                let tail = match store.head().await {
                    Ok(head) => store.tail(head).await.ok(),
                    Err(_) => None,
                };
                let Some(mut tail) = tail else {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        r = shutdown.changed() => if r.is_err() { return },
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                };
                backoff = Duration::from_millis(100);
                hub.wake_all();
                loop {
                    let item = tokio::select! {
                        item = tail.next() => item,
                        r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return } else { continue },
                    };
                    match item {
                        Some(Ok(_)) => {
                            // One wake covers the whole burst already delivered.
                            let mut ended = false;
                            for _ in 0..10_000 {
                                match tail.next().now_or_never() {
                                    Some(Some(Ok(_))) => {}
                                    Some(Some(Err(_)) | None) => {
                                        ended = true;
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            hub.wake_all();
                            if ended {
                                break;
                            }
                        }
                        // An undecodable entry or a lost connection: reopen at the head.
                        Some(Err(_)) | None => break,
                    }
                }
            }
        })
    }
}

//! The live feed: one tail of the partition logs, fanned out to every WebSocket client.
//!
//! A single task follows the store from its head (reopening the tail when it ends) and
//! publishes each event on a `tokio::sync::broadcast` channel, so a thousand clients cost
//! one reader, never a Redis read each. The channel is the bounded per-client buffer: a
//! client that falls more than `capacity` events behind is told so (`Lagged`) and closed,
//! and the sender never waits for anyone. The feed also remembers which machine each
//! running job was assigned to, so machine subscriptions see that job's events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use jobsource_eventstore::{EventStore, RecordedEvent};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// One event as the feed publishes it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// The stored event.
    pub event: RecordedEvent,
    /// The job's id (job events).
    pub job_id: Option<Uuid>,
    /// The workflow's id (workflow events).
    pub workflow_id: Option<Uuid>,
    /// The machine the job is (or was last) assigned to, if any.
    pub machine_id: Option<String>,
}

/// The fan-out of the live log.
pub struct LiveFeed {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    machines: Mutex<HashMap<Uuid, String>>,
}

impl LiveFeed {
    /// A feed whose clients may fall at most `capacity` events behind.
    pub fn new(capacity: usize) -> Arc<Self> {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Arc::new(LiveFeed {
            sender,
            machines: Mutex::new(HashMap::new()),
        })
    }

    /// A new client's receiver (events from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }

    /// Publishes one stored event.
    pub fn publish(&self, event: RecordedEvent) {
        let env = &event.envelope;
        let id = |prefix: &str| {
            env.stream
                .strip_prefix(prefix)
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        let job_id = id("job-");
        let workflow_id = id("workflow-");
        let machine_id = job_id.and_then(|job| {
            let mut machines = self.machines.lock().unwrap_or_else(PoisonError::into_inner);
            if env.event_type == "job_assigned" {
                if let Some(m) = env.data.get("machine_id").and_then(|m| m.as_str()) {
                    machines.insert(job, m.to_owned());
                }
            }
            let machine = machines.get(&job).cloned();
            let terminal = matches!(env.event_type.as_str(), "job_completed" | "job_cancelled")
                || (env.event_type == "job_failed"
                    && env.data.get("will_retry").and_then(|w| w.as_bool()) == Some(false));
            if terminal {
                machines.remove(&job);
            }
            machine
        });
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(Arc::new(LiveEvent {
            event,
            job_id,
            workflow_id,
            machine_id,
        }));
    }

    /// Follows `store` from its head and publishes until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn EventStore>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        while !*shutdown.borrow() {
            let tail = match store.head().await {
                Ok(head) => store.tail(head).await,
                Err(e) => Err(e),
            };
            let mut tail = match tail {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "live feed cannot follow the log; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            loop {
                tokio::select! {
                    next = tail.next() => match next {
                        Some(Ok(e)) => self.publish(e),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "live feed skipped an unreadable entry");
                        }
                        None => break,
                    },
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

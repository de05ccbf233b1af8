//! Rebuilds running in this process, with their progress, so `GET /v1/projections` can
//! show `rebuilding` with `events_done`, `events_total`, `events_per_sec` and
//! `eta_seconds`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub use crate::status::RebuildStatus;

#[derive(Debug, Clone)]
struct Entry {
    done: u64,
    total: Option<u64>,
    started: Instant,
}

/// The running rebuilds (at most one per projection).
#[derive(Debug, Clone, Default)]
pub struct RebuildTracker {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl RebuildTracker {
    /// No rebuild running.
    pub fn new() -> Self {
        RebuildTracker::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Plain inserts, updates and removes: a poisoned lock still holds a sound map.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a rebuild of `name`; `None` when one is already running. The rebuild
    /// counts as running until the returned guard is dropped (the task ended or panicked).
    pub fn begin(&self, name: &str) -> Option<RebuildGuard> {
        let mut all = self.lock();
        if all.contains_key(name) {
            return None;
        }
        all.insert(
            name.to_owned(),
            Entry {
                done: 0,
                total: None,
                started: Instant::now(),
            },
        );
        Some(RebuildGuard {
            tracker: self.clone(),
            name: name.to_owned(),
        })
    }

    /// Whether a rebuild of `name` runs.
    pub fn is_running(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Progress of every running rebuild.
    pub fn snapshot(&self) -> Vec<(String, RebuildStatus)> {
        self.lock()
            .iter()
            .map(|(name, e)| {
                let secs = e.started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 {
                    e.done as f64 / secs
                } else {
                    0.0
                };
                let eta = e
                    .total
                    .and_then(|t| (rate > 0.0).then(|| t.saturating_sub(e.done) as f64 / rate));
                (
                    name.clone(),
                    RebuildStatus {
                        events_done: e.done,
                        events_total: e.total,
                        events_per_sec: (rate * 10.0).round() / 10.0,
                        eta_seconds: eta.map(|s| (s * 10.0).round() / 10.0),
                    },
                )
            })
            .collect()
    }
}

/// A running rebuild; dropping it ends it in the tracker.
pub struct RebuildGuard {
    tracker: RebuildTracker,
    name: String,
}

impl RebuildGuard {
    /// Records that `done` of `total` events are applied (`total` 0 = unknown).
    pub fn progress(&self, done: u64, total: u64) {
        if let Some(e) = self.tracker.lock().get_mut(&self.name) {
            e.done = done;
            e.total = (total > 0).then_some(total);
        }
    }
}

impl Drop for RebuildGuard {
    fn drop(&mut self) {
        self.tracker.lock().remove(&self.name);
    }
}

//! In-memory backend: the same semantics as Redis, for embedded mode and fast tests.
//!
//! One mutex guards the whole store; appends are short critical sections (no I/O, no
//! encoding inside the lock), which is what makes it both atomic and fast. Log ids are
//! generated the way Redis generates stream ids (`<ms>-<seq>`, monotonic), so positions,
//! timestamps-as-offsets and cursors behave identically on both backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::append::{AppendRequest, AppendResult, Idempotency, StoreConfig};
use crate::envelope::RecordedEvent;
use crate::error::{DecodeError, StoreError};
use crate::memory_queue::QueueIndex;
use crate::partition::partition_of;
use crate::position::{Cursor, LogId, Position};
use crate::queue::{fill_template, ClaimSpec, Claimed, LeaseEntry, STREAM_PREFIX};
use crate::store::{EventStore, EventStream};
use crate::upcast;

mod store;
mod stored;
use stored::{Stored, Types};

struct Entry {
    id: LogId,
    event: Box<Stored>,
}

struct StreamState {
    /// The stream's name, shared by its stored events.
    name: Arc<str>,
    /// Index into the partition log of each version (index 0 = version 1).
    entries: Vec<usize>,
}

impl StreamState {
    fn named(name: &str) -> Self {
        StreamState {
            name: Arc::from(name),
            entries: Vec::new(),
        }
    }
}

struct Idem {
    fingerprint: String,
    result: AppendResult,
    expires: Instant,
}

struct Inner {
    logs: Vec<Vec<Entry>>,
    streams: HashMap<String, StreamState>,
    types: Types,
    idempotency: HashMap<(String, String), Idem>,
    reservations: HashMap<String, (String, Instant)>,
    appends_since_sweep: u64,
    queue: QueueIndex,
}

/// The in-memory event store. Cloning gives another handle to the same store.
#[derive(Clone)]
pub struct MemoryStore {
    config: StoreConfig,
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    appended: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied append (all mutation
        // happens after every check), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `limit` events after `cursor`, across partitions (each in log order).
    fn read_after(&self, cursor: &Cursor, limit: usize) -> Vec<Result<RecordedEvent, StoreError>> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (p, log) in inner.logs.iter().enumerate() {
            let after = cursor.after(p as u32);
            let start = log.partition_point(|e| e.id <= after);
            for e in log[start..].iter().take(limit.saturating_sub(out.len())) {
                out.push(recorded(p as u32, e));
            }
        }
        out
    }
}

impl MemoryStore {
    /// Creates an empty store.
    pub fn new(config: StoreConfig) -> Self {
        let partitions = config.partitions.max(1);
        MemoryStore {
            config: StoreConfig {
                partitions,
                ..config
            },
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    logs: (0..partitions).map(|_| Vec::new()).collect(),
                    streams: HashMap::new(),
                    types: Types::default(),
                    idempotency: HashMap::new(),
                    reservations: HashMap::new(),
                    appends_since_sweep: 0,
                    queue: QueueIndex::new(partitions),
                }),
                appended: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Total number of events stored (all partitions).
    pub fn len(&self) -> usize {
        self.lock().logs.iter().map(Vec::len).sum()
    }

    /// True when nothing was appended yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads back a stored envelope, upcast to the current schema like the Redis backend does.
fn recorded(partition: u32, entry: &Entry) -> Result<RecordedEvent, StoreError> {
    let position = Position::new(partition, entry.id);
    let envelope = entry.event.envelope();
    let envelope = if upcast::needs_upcast(&envelope) {
        upcast::upcast(envelope).map_err(|message| DecodeError {
            at: position.to_string(),
            message,
        })?
    } else {
        envelope
    };
    Ok(RecordedEvent { position, envelope })
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

fn next_id(last: Option<LogId>) -> LogId {
    let now = now_ms();
    match last {
        Some(l) if l.ms >= now => LogId::new(l.ms, l.seq + 1),
        _ => LogId::new(now, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_monotonic_within_a_millisecond() {
        let a = next_id(None);
        let b = next_id(Some(a));
        assert!(b > a);
        let future = LogId::new(a.ms + 10_000, 3);
        assert_eq!(next_id(Some(future)), LogId::new(a.ms + 10_000, 4));
    }
}

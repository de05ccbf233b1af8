//! Folded aggregate states of recently commanded streams, so a command on a hot job
//! (progress, complete right after a claim) is decided without reading its history first.
//!
//! Safe because every append that uses a cached state carries `Exact(version)`: if any
//! other writer (another instance, a claim, a lease timer) moved the stream, the append is
//! refused, the entry is dropped and the command is decided again on a fresh fold. A
//! decision that fails on a cached state is also retried on a fresh fold, so a stale cache
//! can never turn into a wrong answer, only into one extra round trip.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Entries kept before the cache drops half of them.
const CAPACITY: usize = 50_000;

/// Stream name -> its folded state as of its last command here.
#[derive(Default)]
pub struct StateCache {
    inner: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
}

impl StateCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn Any + Send + Sync>>> {
        // The map holds no invariant a panic could break mid-update.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached state of `stream`, if it has one of type `A`.
    pub fn get<A: Clone + 'static>(&self, stream: &str) -> Option<A> {
        self.lock()
            .get(stream)
            .and_then(|s| s.downcast_ref::<A>())
            .cloned()
    }

    /// Remembers `state` as `stream`'s current state.
    pub fn put<A: Send + Sync + 'static>(&self, stream: &str, state: A) {
        let mut map = self.lock();
        if map.len() >= CAPACITY && !map.contains_key(stream) {
            // Cheap bounded eviction: keep every other entry.
            let mut keep = false;
            map.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        map.insert(stream.to_owned(), Arc::new(state));
    }

    /// Forgets `stream` (its state moved elsewhere, or it reached a terminal state).
    pub fn forget(&self, stream: &str) {
        self.lock().remove(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_typed_states_and_stays_bounded() {
        let c = StateCache::default();
        c.put("a", 1u64);
        assert_eq!(c.get::<u64>("a"), Some(1));
        assert_eq!(c.get::<String>("a"), None);
        c.forget("a");
        assert_eq!(c.get::<u64>("a"), None);
        for i in 0..(CAPACITY + 10) {
            c.put(&i.to_string(), i);
        }
        assert!(c.lock().len() <= CAPACITY);
    }
}

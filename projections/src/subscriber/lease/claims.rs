//! One consumer's claims on this instance: renewal, fair share, takeover, and the epoch
//! each held partition is written under.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{LeaseInfo, LeaseStore};
use crate::subscriber::HandlerError;

#[derive(Debug, Clone)]
struct Held {
    epoch: u64,
    /// When this instance stops treating the lease as its own (local clock, a margin
    /// before the server-side expiry).
    valid_until: Instant,
    renewed: Instant,
}

#[derive(Default)]
struct ClaimsState {
    held: HashMap<u32, Held>,
    /// Partitions held by others: not retried before their lease runs out.
    others: HashMap<u32, (LeaseInfo, Instant)>,
}

/// One consumer's view of its partition leases on this instance.
pub struct Claims {
    store: std::sync::Arc<dyn LeaseStore>,
    consumer: String,
    instance: String,
    ttl: Duration,
    partitions: u32,
    state: Mutex<ClaimsState>,
}

impl Claims {
    /// The claims of `consumer` on `partitions` partitions for `instance`.
    pub fn new(
        store: std::sync::Arc<dyn LeaseStore>,
        consumer: &str,
        instance: &str,
        ttl: Duration,
        partitions: u32,
    ) -> Self {
        Claims {
            store,
            consumer: consumer.to_owned(),
            instance: instance.to_owned(),
            ttl,
            partitions,
            state: Mutex::new(ClaimsState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, ClaimsState> {
        // Plain map writes only: a poisoned lock still holds sound maps.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The lease length.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fencing epoch of `partition` when this instance holds it now.
    pub fn epoch(&self, partition: u32) -> Option<u64> {
        let now = Instant::now();
        self.state()
            .held
            .get(&partition)
            .filter(|h| h.valid_until > now)
            .map(|h| h.epoch)
    }

    /// Forgets `partition` (its checkpoint write was fenced: someone else has it).
    pub fn lost(&self, partition: u32) {
        self.state().held.remove(&partition);
    }

    /// The holder of each partition, read from the lease store.
    pub async fn holders(&self) -> Result<Vec<Option<LeaseInfo>>, HandlerError> {
        self.store.holders(&self.consumer, self.partitions).await
    }

    /// Renews, balances and takes leases (see the module docs). Renewals happen every
    /// third of the TTL; free partitions are tried whenever their holder's lease ran out.
    pub async fn refresh(&self) -> Result<(), HandlerError> {
        let live = self.store.announce(&self.instance, self.ttl).await?.max(1);
        let share = (self.partitions as usize).div_ceil(live);
        let now = Instant::now();
        let (mut held, due): (Vec<u32>, Vec<u32>) = {
            let state = self.state();
            let mut held: Vec<u32> = state.held.keys().copied().collect();
            held.sort_unstable();
            let due = held
                .iter()
                .copied()
                .filter(|p| {
                    state
                        .held
                        .get(p)
                        .is_some_and(|h| now.duration_since(h.renewed) >= self.ttl / 3)
                })
                .collect();
            (held, due)
        };
        // Over the share: give the highest partitions up so newcomers get theirs.
        while held.len() > share {
            let Some(p) = held.pop() else { break };
            self.store
                .release(&self.consumer, p, &self.instance)
                .await?;
            self.state().held.remove(&p);
            tracing::info!(consumer = %self.consumer, partition = p, "partition lease released (rebalance)");
        }
        for p in due.into_iter().filter(|p| held.contains(p)) {
            self.take(p).await?;
        }
        let mut count = self.state().held.len();
        for p in 0..self.partitions {
            if count >= share {
                break;
            }
            let skip = {
                let state = self.state();
                state.held.contains_key(&p)
                    || state.others.get(&p).is_some_and(|(info, seen)| {
                        // Retried when the holder's lease runs out, or a third of the TTL
                        // later (it may have been released to rebalance).
                        let left =
                            Duration::from_millis(info.expires_at_ms.saturating_sub(info.now_ms));
                        now < *seen + left.min(self.ttl / 3)
                    })
            };
            if !skip && self.take(p).await? {
                count += 1;
                tracing::info!(consumer = %self.consumer, partition = p, "partition lease taken");
            }
        }
        Ok(())
    }

    /// Acquires or renews `partition`; true when held afterwards.
    async fn take(&self, partition: u32) -> Result<bool, HandlerError> {
        let asked = Instant::now();
        let info = self
            .store
            .acquire(&self.consumer, partition, &self.instance, self.ttl)
            .await?;
        let mut state = self.state();
        if info.owner == self.instance {
            // A margin for the round trip and clock drift: stop a little early.
            let valid = Duration::from_millis(info.expires_at_ms.saturating_sub(info.now_ms))
                .saturating_sub(self.ttl / 10);
            state.others.remove(&partition);
            state.held.insert(
                partition,
                Held {
                    epoch: info.epoch,
                    valid_until: asked + valid,
                    renewed: asked,
                },
            );
            Ok(true)
        } else {
            state.held.remove(&partition);
            state.others.insert(partition, (info, asked));
            Ok(false)
        }
    }

    /// Gives every lease up and withdraws the instance (a clean shutdown).
    pub async fn release_all(&self) {
        let held: Vec<u32> = self.state().held.drain().map(|(p, _)| p).collect();
        for p in held {
            if let Err(e) = self.store.release(&self.consumer, p, &self.instance).await {
                tracing::warn!(consumer = %self.consumer, partition = p, error = %e,
                    "cannot release a partition lease; it runs out on its own");
            }
        }
        let _ = self.store.withdraw(&self.instance).await;
    }
}

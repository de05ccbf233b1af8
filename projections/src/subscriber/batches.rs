//! How the runtime applies batches: one pass over the partitions, a batch with bounded
//! retries, then a recorded stall at the failing event.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;

use super::runtime::{BatchEnd, Subscriber, BATCH_DURATION, EVENTS_APPLIED, STATUS_REFRESH};
use super::{HandlerError, Outcome, Recorded};

impl Subscriber {
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

    /// Renews and balances the partition leases, at most every 250 ms.
    async fn refresh_claims(&self) -> Result<(), HandlerError> {
        let Some(claims) = &self.claims else {
            return Ok(());
        };
        {
            let mut last = self.refreshed.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_millis(250)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        claims.refresh().await
    }

    /// The stalled partitions, read from the status store at most every
    /// [`STATUS_REFRESH`].
    async fn stalled_partitions(&self) -> Result<HashSet<u32>, HandlerError> {
        {
            let seen = self.stalled.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, set)) = &*seen {
                if at.elapsed() < STATUS_REFRESH {
                    return Ok(set.clone());
                }
            }
        }
        let recorded = self.status.load(self.name()).await?;
        let set: HashSet<u32> = recorded
            .into_iter()
            .filter(|(_, r)| matches!(r, Recorded::Stalled { .. }))
            .map(|(p, _)| p)
            .collect();
        *self.stalled.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// Drops the remembered stalled set (after this process stalled or resumed).
    pub(super) fn forget_stalls(&self) {
        *self.stalled.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// One batch of every partition that is not stalled (and, with leases, is held here);
    /// true when any moved.
    pub(super) async fn pass(
        &self,
        shutdown: Option<&watch::Receiver<bool>>,
    ) -> Result<bool, HandlerError> {
        self.pass_counted(shutdown).await.map(|(_, p)| p)
    }

    async fn pass_counted(
        &self,
        shutdown: Option<&watch::Receiver<bool>>,
    ) -> Result<(u64, bool), HandlerError> {
        let stalled = self.stalled_partitions().await?;
        self.refresh_claims().await?;
        let partitions: Vec<u32> = (0..self.store.partitions())
            .filter(|p| !stalled.contains(p))
            .filter(|p| self.claims.as_ref().is_none_or(|c| c.epoch(*p).is_some()))
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
            self.forget_stalls();
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
        let fence = match &self.claims {
            Some(claims) => match claims.epoch(partition) {
                Some(epoch) => Some(epoch),
                // The lease ran out while the batch was read: leave it to the next holder.
                None => return Ok((0, false)),
            },
            None => None,
        };
        match self.handler.apply(partition, after, &events, fence).await {
            Ok(Outcome::Applied) => Ok((events.len() as u64, true)),
            Ok(Outcome::Moved) => Ok((0, true)),
            Ok(Outcome::Fenced) => {
                tracing::warn!(
                    consumer = self.name(),
                    partition,
                    "a later lease holder wrote this partition; giving it up"
                );
                if let Some(claims) = &self.claims {
                    claims.lost(partition);
                }
                Ok((0, false))
            }
            Err(e) => Err((e, Some(first))),
        }
    }
}

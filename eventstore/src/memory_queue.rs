//! The in-memory queue index ([`crate::queue`]): the same ready queues, delayed set and
//! leases as the Redis layout, kept under the memory store's one lock.

use std::collections::{BTreeSet, HashMap};

use crate::error::StoreError;
use crate::queue::{ready_score, worker_fits, LeaseEntry, QueueOp};

/// A stream waiting in a ready queue or the delayed set.
#[derive(Debug, Clone)]
struct ReadyRec {
    queue: String,
    score: u64,
    /// The stream's version when it became ready (checked again at claim time).
    version: u64,
    attempt: u32,
    /// Set while the entry is in the delayed set (unix ms it becomes ready).
    delayed_until: Option<u64>,
}

/// One partition's index.
#[derive(Default)]
struct PartitionQueue {
    ready: HashMap<String, BTreeSet<(u64, String)>>,
    records: HashMap<String, ReadyRec>,
    delayed: BTreeSet<(u64, String)>,
    leases: HashMap<String, LeaseEntry>,
    deadlines: BTreeSet<(u64, String)>,
}

/// A ready entry a claim picked: the stream, its version and its next attempt.
pub(crate) struct Picked {
    pub(crate) stream: String,
    pub(crate) version: u64,
    pub(crate) attempt: u32,
}

/// The queue index of every partition.
pub(crate) struct QueueIndex {
    parts: Vec<PartitionQueue>,
}

impl QueueIndex {
    pub(crate) fn new(partitions: u32) -> Self {
        QueueIndex {
            parts: (0..partitions).map(|_| PartitionQueue::default()).collect(),
        }
    }

    fn part(&mut self, p: u32) -> &mut PartitionQueue {
        &mut self.parts[p as usize]
    }

    /// Preconditions of `ops` (checked before anything is written).
    pub(crate) fn check(&self, p: u32, stream: &str, ops: &[QueueOp]) -> Result<(), StoreError> {
        for op in ops {
            if let QueueOp::ExpireDue {
                now_ms,
                attempt,
                force,
            } = op
            {
                let due = self.parts[p as usize]
                    .leases
                    .get(stream)
                    .is_some_and(|l| l.attempt == *attempt && (*force || l.deadline_ms <= *now_ms));
                if !due {
                    return Err(StoreError::LeaseNotDue {
                        stream: stream.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies `ops` for `stream`, now at `version`.
    pub(crate) fn apply(&mut self, p: u32, stream: &str, version: u64, ops: &[QueueOp]) {
        for op in ops {
            match op {
                QueueOp::Ready {
                    queue,
                    priority,
                    available_at_ms,
                    attempt,
                } => {
                    self.unready(p, stream);
                    let now = crate::queue::now_ms();
                    let part = self.part(p);
                    let delayed = *available_at_ms > now;
                    let rec = ReadyRec {
                        queue: queue.clone(),
                        score: ready_score(*priority, (*available_at_ms).max(now)),
                        version,
                        attempt: *attempt,
                        delayed_until: delayed.then_some(*available_at_ms),
                    };
                    if delayed {
                        part.delayed.insert((*available_at_ms, stream.to_owned()));
                    } else {
                        part.ready
                            .entry(queue.clone())
                            .or_default()
                            .insert((rec.score, stream.to_owned()));
                    }
                    part.records.insert(stream.to_owned(), rec);
                }
                QueueOp::Unready => self.unready(p, stream),
                QueueOp::Lease {
                    worker_id,
                    machine_id,
                    attempt,
                    lease_ms,
                    deadline_ms,
                } => {
                    self.unlease(p, stream);
                    let part = self.part(p);
                    part.deadlines.insert((*deadline_ms, stream.to_owned()));
                    part.leases.insert(
                        stream.to_owned(),
                        LeaseEntry {
                            stream: stream.to_owned(),
                            worker_id: worker_id.clone(),
                            machine_id: machine_id.clone(),
                            attempt: *attempt,
                            lease_ms: *lease_ms,
                            deadline_ms: *deadline_ms,
                        },
                    );
                }
                QueueOp::Renew { now_ms } => {
                    self.renew(p, stream, None, *now_ms);
                }
                QueueOp::Unlease | QueueOp::ExpireDue { .. } => self.unlease(p, stream),
            }
        }
    }

    fn unready(&mut self, p: u32, stream: &str) {
        let part = self.part(p);
        if let Some(rec) = part.records.remove(stream) {
            match rec.delayed_until {
                Some(t) => {
                    part.delayed.remove(&(t, stream.to_owned()));
                }
                None => {
                    if let Some(q) = part.ready.get_mut(&rec.queue) {
                        q.remove(&(rec.score, stream.to_owned()));
                        if q.is_empty() {
                            part.ready.remove(&rec.queue);
                        }
                    }
                }
            }
        }
    }

    fn unlease(&mut self, p: u32, stream: &str) {
        let part = self.part(p);
        if let Some(l) = part.leases.remove(stream) {
            part.deadlines.remove(&(l.deadline_ms, stream.to_owned()));
        }
    }

    /// Renews the lease (only `worker` may, when given); the new deadline.
    pub(crate) fn renew(
        &mut self,
        p: u32,
        stream: &str,
        worker: Option<&str>,
        now_ms: u64,
    ) -> Option<u64> {
        let part = self.part(p);
        let lease = part.leases.get_mut(stream)?;
        if worker.is_some_and(|w| w != lease.worker_id) {
            return None;
        }
        part.deadlines
            .remove(&(lease.deadline_ms, stream.to_owned()));
        lease.deadline_ms = now_ms + lease.lease_ms;
        part.deadlines
            .insert((lease.deadline_ms, stream.to_owned()));
        Some(lease.deadline_ms)
    }

    /// Moves due delayed entries of `p` into their ready queues.
    pub(crate) fn promote(&mut self, p: u32, now_ms: u64) {
        let part = self.part(p);
        while let Some((t, stream)) = part.delayed.first().cloned() {
            if t > now_ms {
                break;
            }
            part.delayed.pop_first();
            if let Some(rec) = part.records.get_mut(&stream) {
                rec.delayed_until = None;
                part.ready
                    .entry(rec.queue.clone())
                    .or_default()
                    .insert((rec.score, stream));
            }
        }
    }

    /// Takes the best ready entry of `p` a worker with these capabilities can run.
    pub(crate) fn pick(
        &mut self,
        p: u32,
        capabilities: &[String],
        gpu_memory: Option<f64>,
    ) -> Option<Picked> {
        let part = self.part(p);
        let best = part
            .ready
            .iter()
            .filter(|(q, _)| worker_fits(q, capabilities, gpu_memory))
            .filter_map(|(q, set)| set.first().map(|first| (first.clone(), q.clone())))
            .min()?;
        let ((score, stream), queue) = best;
        if let Some(set) = part.ready.get_mut(&queue) {
            set.remove(&(score, stream.clone()));
            if set.is_empty() {
                part.ready.remove(&queue);
            }
        }
        let rec = part.records.remove(&stream)?;
        Some(Picked {
            stream,
            version: rec.version,
            attempt: rec.attempt,
        })
    }

    pub(crate) fn lease(&self, p: u32, stream: &str) -> Option<LeaseEntry> {
        self.parts[p as usize].leases.get(stream).cloned()
    }

    pub(crate) fn due(&self, p: u32, now_ms: u64, limit: usize) -> Vec<LeaseEntry> {
        let part = &self.parts[p as usize];
        part.deadlines
            .iter()
            .take_while(|(t, _)| *t <= now_ms)
            .take(limit)
            .filter_map(|(_, s)| part.leases.get(s).cloned())
            .collect()
    }

    pub(crate) fn of_machine(&self, machine_id: &str) -> Vec<LeaseEntry> {
        self.parts
            .iter()
            .flat_map(|p| p.leases.values())
            .filter(|l| l.machine_id == machine_id)
            .cloned()
            .collect()
    }

    pub(crate) fn hint(&self, now_ms: u64) -> Vec<bool> {
        self.parts
            .iter()
            .map(|p| !p.ready.is_empty() || p.delayed.first().is_some_and(|(t, _)| *t <= now_ms))
            .collect()
    }
}

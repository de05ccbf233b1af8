//! How job commands keep the store's queue index ([`jobsource_eventstore::queue`]): the
//! lease and backoff times a command needs before it is decided, and the index changes its
//! events imply, appended atomically with them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobsource_domain::job::{Job, JobCommand, JobEvent, JobStatus};
use jobsource_domain::workflow::Workflow;
use jobsource_domain::Aggregate;
use jobsource_eventstore::queue::{now_ms, queue_name};
use jobsource_eventstore::QueueOp;
use rand::Rng;

/// Default lease length (`JOBSOURCE_JOB_LEASE_SECS`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);
/// Default first retry backoff (`JOBSOURCE_RETRY_BACKOFF_MS`).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(1000);
/// Longest retry backoff.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);
/// Longest lease a claim may ask for (`lease_seconds` 1..=86400).
pub const MAX_LEASE_SECS: u64 = 86_400;

/// Job queue settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Lease of an assignment that asks for none.
    pub default_lease: Duration,
    /// Backoff before the first retry; doubles per retry up to [`MAX_RETRY_BACKOFF`].
    pub retry_backoff: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            default_lease: DEFAULT_LEASE,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
        }
    }
}

impl QueueConfig {
    /// Backoff before retry number `retry` (1 = the first): `retry_backoff * 2^(retry-1)`,
    /// capped at 5 minutes, with "equal jitter" (half fixed, half random) so retries of
    /// many jobs that failed together spread out.
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self.retry_backoff.as_millis() as u64;
        let full = base
            .saturating_mul(1u64 << retry.saturating_sub(1).min(30))
            .min(MAX_RETRY_BACKOFF.as_millis() as u64);
        let half = full / 2;
        let jitter = if half > 0 {
            rand::thread_rng().gen_range(0..=half)
        } else {
            0
        };
        Duration::from_millis(full - half + jitter)
    }
}

/// Unix ms of a time (0 before 1970).
pub fn ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// A unix-ms time as a UTC time.
pub fn time_of(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

/// Per-aggregate hooks of the command path: fill in the times a command needs from the
/// loaded state, and derive the queue index changes of its events.
pub trait QueueHooks: Aggregate {
    /// The command to decide instead of `command`, when it needs times from the state.
    fn prepare(&self, _command: &Self::Command, _config: &QueueConfig) -> Option<Self::Command> {
        None
    }

    /// Queue index changes for `events`, decided from `self` for `command`.
    fn queue_ops(
        &self,
        _command: &Self::Command,
        _events: &[Self::Event],
        _config: &QueueConfig,
    ) -> Vec<QueueOp> {
        Vec::new()
    }
}

impl QueueHooks for Workflow {}

impl QueueHooks for Job {
    fn prepare(&self, command: &JobCommand, config: &QueueConfig) -> Option<JobCommand> {
        let now = Utc::now();
        let backoff = |retry: u32| {
            now + chrono::Duration::from_std(config.backoff(retry)).unwrap_or_default()
        };
        match command {
            JobCommand::Assign(a) if a.lease_expires_at.is_none() => {
                let mut a = a.clone();
                a.lease_expires_at = Some(
                    now + chrono::Duration::from_std(config.default_lease).unwrap_or_default(),
                );
                Some(JobCommand::Assign(a))
            }
            JobCommand::Fail(f) if f.retry_at.is_none() => {
                let mut f = f.clone();
                f.retry_at = Some(backoff(self.retry_count + 1));
                Some(JobCommand::Fail(f))
            }
            JobCommand::ExpireLease(x) if x.retry_at.is_none() => {
                let mut x = x.clone();
                x.retry_at = Some(backoff(self.retry_count + 1));
                Some(JobCommand::ExpireLease(x))
            }
            _ => None,
        }
    }

    fn queue_ops(
        &self,
        command: &JobCommand,
        events: &[JobEvent],
        _: &QueueConfig,
    ) -> Vec<QueueOp> {
        let now = now_ms();
        let mut ops = Vec::new();
        if let JobCommand::ExpireLease(x) = command {
            ops.push(QueueOp::ExpireDue {
                now_ms: now,
                attempt: x.attempt,
                force: x.force,
            });
        }
        // `self` is the state before the events; fold as we go so a `Ready` sees the
        // submitted requirements.
        let mut state = self.clone();
        for e in events {
            state.apply(e);
            match e {
                JobEvent::JobSubmitted(s) if s.status == JobStatus::Pending => {
                    ops.push(ready_op(&state, now, s.available_at));
                }
                JobEvent::JobReleased { .. } => ops.push(ready_op(&state, now, None)),
                JobEvent::JobAssigned {
                    worker_id,
                    machine_id,
                    attempt,
                    lease_expires_at,
                    ..
                } => {
                    let deadline = lease_expires_at.map_or(now, ms);
                    ops.push(QueueOp::Unready);
                    ops.push(QueueOp::Lease {
                        worker_id: worker_id.clone(),
                        machine_id: machine_id.clone(),
                        attempt: *attempt,
                        lease_ms: deadline.saturating_sub(now).max(1000),
                        deadline_ms: deadline,
                    });
                }
                JobEvent::JobProgress { .. } => ops.push(QueueOp::Renew { now_ms: now }),
                JobEvent::JobCompleted { .. } => ops.push(QueueOp::Unlease),
                JobEvent::JobFailed {
                    will_retry,
                    available_at,
                    ..
                } => {
                    ops.push(QueueOp::Unlease);
                    if *will_retry {
                        ops.push(ready_op(&state, now, *available_at));
                    }
                }
                JobEvent::JobCancelled { .. } => ops.push(QueueOp::Unready),
                JobEvent::JobSubmitted(_) | JobEvent::JobLeaseExpired { .. } => {}
            }
        }
        ops
    }
}

/// The job is claimable from `at` (now when absent or past) in the queue of its
/// requirements, as its next attempt.
fn ready_op(job: &Job, now: u64, at: Option<DateTime<Utc>>) -> QueueOp {
    let (caps, gpu) = match &job.requirements {
        Some(r) if !r.capabilities.is_empty() => (r.capabilities.clone(), r.gpu_memory),
        Some(r) => (vec![job.job_type.clone()], r.gpu_memory),
        None => (vec![job.job_type.clone()], None),
    };
    QueueOp::Ready {
        queue: queue_name(&caps, gpu),
        priority: job.priority,
        available_at_ms: at.map_or(now, ms).max(now),
        attempt: job.attempt + 1,
    }
}

impl QueueHooks for jobsource_domain::machine::Machine {}

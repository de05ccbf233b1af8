//! The job queue's write-side index: ready queues, delays and leases, kept by the append
//! path itself.
//!
//! An append may carry [`QueueOp`]s for its stream; both backends apply them in the same
//! atomic step as the events (the Redis append script, or the memory store's lock), so the
//! index can never disagree with the log the way a lagging read model can. Per partition:
//! - ready queues, one per required capability set and GPU size ([`queue_name`]), ordered
//!   by priority then by the time the stream became ready (FIFO);
//! - a delayed set ordered by `available_at`: entries move to their ready queue when a
//!   claim on that partition runs at or after their time (BullMQ's delayed set);
//! - leases: holder, attempt, length and deadline of every assignment, ordered by deadline
//!   so a sweeper finds the expired ones (the durable timers).
//!
//! A claim ([`ClaimSpec`]) picks the best ready stream of one partition that the worker
//! can run and appends its assignment event, built from a template, in the same atomic
//! call: no read-model lag, no herd, no double assignment.

use serde::{Deserialize, Serialize};

/// Placeholder byte in a claim template for the picked job's uuid.
pub const TEMPLATE_ID: char = '\u{1}';
/// Placeholder byte in a claim template for the assignment's version.
pub const TEMPLATE_VERSION: char = '\u{2}';
/// Placeholder byte in a claim template for the assignment's attempt number.
pub const TEMPLATE_ATTEMPT: char = '\u{3}';

/// Streams the queue index holds start with this (their id follows).
pub const STREAM_PREFIX: &str = "job-";

/// A change to the queue index, applied atomically with an append to its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueueOp {
    /// The stream is claimable in `queue` from `available_at_ms` on (at once when that has
    /// passed); its next assignment will be attempt `attempt`.
    Ready {
        /// Queue name ([`queue_name`]).
        queue: String,
        /// 0..=100, higher first.
        priority: u8,
        /// Unix ms from which it may be claimed.
        available_at_ms: u64,
        /// Attempt number of the next assignment.
        attempt: u32,
    },
    /// The stream is no longer claimable (cancelled, assigned by hand).
    Unready,
    /// The stream is assigned: start a lease.
    Lease {
        /// Holder.
        worker_id: String,
        /// Holder's machine.
        machine_id: String,
        /// Attempt the lease belongs to.
        attempt: u32,
        /// Lease length (renewals extend by this much from their time).
        lease_ms: u64,
        /// Unix ms when it runs out unless renewed.
        deadline_ms: u64,
    },
    /// Renew the stream's lease (if it has one) to `now_ms` + its length.
    Renew {
        /// The renewal's time.
        now_ms: u64,
    },
    /// The lease ends (the attempt completed, failed or expired).
    Unlease,
    /// Precondition: the stream's lease of `attempt` exists and its deadline is at or
    /// before `now_ms`; otherwise nothing is appended and the append answers
    /// [`crate::StoreError::LeaseNotDue`] (a renewal won the race against the sweeper).
    /// `force` skips the deadline check (its machine went offline).
    ExpireDue {
        /// The sweeper's time.
        now_ms: u64,
        /// The attempt being expired.
        attempt: u32,
        /// Expire even before the deadline.
        force: bool,
    },
}

/// The queue a job with these requirements waits in: its sorted, deduplicated required
/// capabilities joined by `,`, then `|` and its GPU memory in GB (empty when none).
///
/// Capability names cannot contain `,` or `|` (the domain validates them).
pub fn queue_name(capabilities: &[String], gpu_memory: Option<f64>) -> String {
    let mut caps: Vec<&str> = capabilities.iter().map(String::as_str).collect();
    caps.sort_unstable();
    caps.dedup();
    let gpu = gpu_memory.map(|g| g.to_string()).unwrap_or_default();
    format!("{}|{gpu}", caps.join(","))
}

/// Whether a worker with `capabilities` and `gpu_memory` may take jobs of `queue`: it
/// holds every capability, and the job's GPU need (if any) fits its GPU (a worker without
/// one takes only jobs without one).
pub fn worker_fits(queue: &str, capabilities: &[String], gpu_memory: Option<f64>) -> bool {
    let (caps, gpu) = queue.rsplit_once('|').unwrap_or((queue, ""));
    let caps_ok = caps.is_empty()
        || caps
            .split(',')
            .all(|c| capabilities.iter().any(|have| have == c));
    let gpu_ok = match (gpu.parse::<f64>().ok(), gpu_memory) {
        (None, _) => true,
        (Some(need), Some(have)) => need <= have,
        (Some(_), None) => false,
    };
    caps_ok && gpu_ok
}

/// Ready-queue order: higher priority first, then earlier `ready_ms` (FIFO). Exact in a
/// Redis zset score (a double) for any time before the year 2286.
pub fn ready_score(priority: u8, ready_ms: u64) -> u64 {
    u64::from(100 - priority.min(100)) * 10_000_000_000_000 + ready_ms
}

/// A worker asking one partition for its best ready job.
#[derive(Debug, Clone)]
pub struct ClaimSpec {
    /// Capabilities the worker holds.
    pub capabilities: Vec<String>,
    /// GPU memory the worker offers (GB).
    pub gpu_memory: Option<f64>,
    /// Holder of the lease.
    pub worker_id: String,
    /// Holder's machine.
    pub machine_id: String,
    /// Lease length.
    pub lease_ms: u64,
    /// The claim's time (unix ms): promotes due delayed jobs, starts the lease.
    pub now_ms: u64,
    /// The assignment envelope with [`TEMPLATE_ID`], [`TEMPLATE_VERSION`] and
    /// [`TEMPLATE_ATTEMPT`] where the job's uuid, the version and the attempt go.
    pub template: String,
}

/// What a claim got: the job's stream and its whole history, the assignment last.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Stream of the assigned job.
    pub stream: String,
    /// The stream's events, in order; the last is the assignment.
    pub history: Vec<crate::RecordedEvent>,
}

/// A lease as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEntry {
    /// Stream of the job.
    pub stream: String,
    /// Holder.
    pub worker_id: String,
    /// Holder's machine.
    pub machine_id: String,
    /// Attempt.
    pub attempt: u32,
    /// Lease length in ms.
    pub lease_ms: u64,
    /// Unix ms when it runs out.
    pub deadline_ms: u64,
}

/// Substitutes a claim template (what the Redis script does in Lua).
pub fn fill_template(template: &str, job_id: &str, version: u64, attempt: u32) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    for c in template.chars() {
        match c {
            TEMPLATE_ID => out.push_str(job_id),
            TEMPLATE_VERSION => out.push_str(&version.to_string()),
            TEMPLATE_ATTEMPT => out.push_str(&attempt.to_string()),
            other => out.push(other),
        }
    }
    out
}

/// The current time in unix ms.
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn queue_names_are_canonical() {
        assert_eq!(queue_name(&caps(&["b", "a", "b"]), None), "a,b|");
        assert_eq!(queue_name(&caps(&["gpu"]), Some(24.0)), "gpu|24");
        assert_eq!(queue_name(&caps(&["gpu"]), Some(7.5)), "gpu|7.5");
    }

    #[test]
    fn workers_fit_by_capabilities_and_gpu() {
        let w = caps(&["a", "b"]);
        assert!(worker_fits("a|", &w, None));
        assert!(worker_fits("a,b|", &w, None));
        assert!(!worker_fits("a,c|", &w, None));
        assert!(worker_fits("|", &w, None));
        assert!(worker_fits("a|16", &w, Some(24.0)));
        assert!(worker_fits("a|24", &w, Some(24.0)));
        assert!(!worker_fits("a|48", &w, Some(24.0)));
        assert!(!worker_fits("a|8", &w, None));
        assert!(worker_fits("a|", &w, Some(8.0)));
    }

    #[test]
    fn scores_order_by_priority_then_time() {
        assert!(ready_score(90, 2_000_000_000_000) < ready_score(10, 1));
        assert!(ready_score(50, 1) < ready_score(50, 2));
        assert!(ready_score(0, 9_999_999_999_999) < 1u64 << 53);
    }

    #[test]
    fn templates_fill_in_id_version_and_attempt() {
        let t = format!(
            "{{\"s\":\"job-{TEMPLATE_ID}\",\"v\":{TEMPLATE_VERSION},\"a\":{TEMPLATE_ATTEMPT}}}"
        );
        assert_eq!(
            fill_template(&t, "x", 3, 2),
            "{\"s\":\"job-x\",\"v\":3,\"a\":2}"
        );
    }
}

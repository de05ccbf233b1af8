//! Worker claims: the best ready job a worker can run, assigned in one atomic store call.
//!
//! The store keeps the ready queues as a write-side index (updated in the same atomic
//! append as `job_submitted`, `job_released`, retries and cancels), and its claim picks
//! the best entry of one partition, checks the job's version and appends `job_assigned`
//! with a lease, all in one call. So a claim is one round trip when the partition it tries
//! has work, there is no read-model lag, and two claimers never get the same job.
//!
//! Across partitions, claims go round robin: each claim starts at the partition after the
//! previous claim's, so a ready job waits behind lower-priority jobs of other partitions
//! for at most about one claim per partition. When the first partition has nothing for
//! the worker, one more round trip (`ready_hint`) tells which partitions have work.
//! A claim with `wait` long-polls: it sleeps until this process makes a job claimable, or
//! polls the hint every 100 ms (other instances' jobs, delayed jobs coming due).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jobsource_domain::job::{Job, JobEvent};
use jobsource_domain::validate;
use jobsource_eventstore::codec::encode_split;
use jobsource_eventstore::queue::{
    now_ms, ClaimSpec, TEMPLATE_ATTEMPT, TEMPLATE_ID, TEMPLATE_VERSION,
};
use jobsource_eventstore::typed::{from_envelope, to_new_event};
use jobsource_eventstore::RecordedEvent;
use serde_json::Value;
use uuid::Uuid;

use super::queue::{time_of, MAX_LEASE_SECS};
use super::{CommandContext, Service, ServiceError};

/// Longest a claim may long-poll (`wait_ms`).
pub const MAX_WAIT_MS: u64 = 30_000;
/// How often a waiting claim looks for work other processes made claimable.
const POLL: Duration = Duration::from_millis(100);

/// A worker asking for work.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// Worker id.
    pub worker_id: String,
    /// Machine id.
    pub machine_id: String,
    /// Capabilities the worker has.
    pub capabilities: Vec<String>,
    /// GPU memory the worker offers (GB); `None` takes only jobs that need none.
    pub gpu_memory: Option<f64>,
    /// Lease length in seconds (`None`: the configured default).
    pub lease_seconds: Option<u64>,
    /// Long-poll up to this long for a job (`None`/0: answer at once).
    pub wait_ms: Option<u64>,
}

/// What a claim got.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job after its assignment.
    pub state: Job,
    /// Its history, the assignment last.
    pub history: Vec<RecordedEvent>,
}

impl Claimed {
    /// Stream version after the assignment.
    pub fn version(&self) -> u64 {
        self.state.version
    }

    /// Position of the assignment.
    pub fn position(&self) -> Option<jobsource_eventstore::Position> {
        self.history.last().map(|e| e.position)
    }
}

/// Checks a claim's fields (422 naming the field; nothing happens on bad input).
pub fn validate(claim: &Claim) -> Result<(), ServiceError> {
    if claim.worker_id.trim().is_empty() || claim.worker_id.len() > 256 {
        return Err(ServiceError::validation(
            "worker_id",
            "must be 1..=256 characters",
        ));
    }
    if claim.machine_id.trim().is_empty() || claim.machine_id.len() > 256 {
        return Err(ServiceError::validation(
            "machine_id",
            "must be 1..=256 characters",
        ));
    }
    if claim.capabilities.len() > 256 {
        return Err(ServiceError::validation(
            "capabilities",
            "at most 256 capabilities",
        ));
    }
    if let Some(g) = claim.gpu_memory {
        if !validate::is_valid_gpu_memory(g) {
            return Err(ServiceError::validation(
                "gpu_memory",
                validate::GPU_MEMORY_RULE,
            ));
        }
    }
    if let Some(l) = claim.lease_seconds {
        if !(1..=MAX_LEASE_SECS).contains(&l) {
            return Err(ServiceError::validation(
                "lease_seconds",
                format!("must be between 1 and {MAX_LEASE_SECS}"),
            ));
        }
    }
    if let Some(w) = claim.wait_ms {
        if w > MAX_WAIT_MS {
            return Err(ServiceError::validation(
                "wait_ms",
                format!("must be between 0 and {MAX_WAIT_MS}"),
            ));
        }
    }
    Ok(())
}

/// Sentinels the template is built with, replaced by the placeholder bytes.
const SENTINEL_ID: Uuid = Uuid::from_u128(0xffff_ffff_ffff_7fff_bfff_ffff_ffff_ffff);
const SENTINEL_VERSION: u64 = 900_719_925_474;
const SENTINEL_ATTEMPT: u32 = 4_294_960_001;

/// The `job_assigned` envelope of a claim, with placeholders for the job, version and
/// attempt that only the store's pick decides.
fn template(claim: &Claim, lease_ms: u64, now: u64, ctx: &CommandContext) -> String {
    let event = JobEvent::JobAssigned {
        job_id: SENTINEL_ID,
        worker_id: claim.worker_id.clone(),
        machine_id: claim.machine_id.clone(),
        attempt: SENTINEL_ATTEMPT,
        lease_expires_at: Some(time_of(now + lease_ms)),
    };
    let mut ne = to_new_event(&event).with_correlation(ctx.correlation_id.clone());
    if let Some(c) = &ctx.causation_id {
        ne = ne.with_causation(c.clone());
    }
    if let Some(actor) = &ctx.actor {
        ne = ne.with_meta("actor", Value::from(actor.clone()));
    }
    ne.occurred_at = time_of(now);
    let json = encode_split(&format!("job-{SENTINEL_ID}"), &ne).join(SENTINEL_VERSION);
    json.replace(&SENTINEL_ID.to_string(), &TEMPLATE_ID.to_string())
        .replace(
            &format!("\"version\":{SENTINEL_VERSION}"),
            &format!("\"version\":{TEMPLATE_VERSION}"),
        )
        .replace(
            &format!("\"attempt\":{SENTINEL_ATTEMPT}"),
            &format!("\"attempt\":{TEMPLATE_ATTEMPT}"),
        )
}

/// Claims a job for `claim`; `Ok(None)` when nothing ready fits (after `wait_ms`).
pub async fn claim(
    service: &Service,
    claim: &Claim,
    ctx: &CommandContext,
) -> Result<Option<Claimed>, ServiceError> {
    validate(claim)?;
    let deadline = Instant::now() + Duration::from_millis(claim.wait_ms.unwrap_or(0));
    let lease_ms = claim
        .lease_seconds
        .map_or(service.queue.default_lease.as_millis() as u64, |s| s * 1000);
    let mut first = true;
    loop {
        // Register for wake-ups before looking, so a job made ready meanwhile is not missed.
        let notified = service.ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(got) = claim_once(service, claim, lease_ms, first, ctx).await? {
            return Ok(Some(got));
        }
        first = false;
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let _ = tokio::time::timeout((deadline - now).min(POLL), notified).await;
    }
}

/// One pass: the round-robin partition first, then (if it had nothing) the partitions
/// the store says have work.
async fn claim_once(
    service: &Service,
    claim: &Claim,
    lease_ms: u64,
    try_first: bool,
    ctx: &CommandContext,
) -> Result<Option<Claimed>, ServiceError> {
    let store = service.store();
    let partitions = store.partitions();
    let start = service.next_partition.fetch_add(1, Ordering::Relaxed) % partitions;
    let now = now_ms();
    let spec = ClaimSpec {
        capabilities: claim.capabilities.clone(),
        gpu_memory: claim.gpu_memory,
        worker_id: claim.worker_id.clone(),
        machine_id: claim.machine_id.clone(),
        lease_ms,
        now_ms: now,
        template: template(claim, lease_ms, now, ctx),
    };
    if try_first {
        if let Some(got) = store.claim(start, &spec).await? {
            return finish(service, got).map(Some);
        }
    }
    let hint = store.ready_hint(now).await?;
    for i in 0..partitions {
        let p = (start + i) % partitions;
        if (try_first && i == 0) || !hint.get(p as usize).copied().unwrap_or(false) {
            continue;
        }
        if let Some(got) = store.claim(p, &spec).await? {
            return finish(service, got).map(Some);
        }
    }
    Ok(None)
}

fn finish(service: &Service, got: jobsource_eventstore::Claimed) -> Result<Claimed, ServiceError> {
    let mut state = Job::default();
    for e in &got.history {
        let event: JobEvent = from_envelope(&e.envelope)
            .map_err(|d| ServiceError::Internal(format!("claimed job {}: {d}", got.stream)))?;
        state.apply(&event);
    }
    metrics::counter!(crate::metrics::EVENTS_APPENDED, "type" => "job_assigned").increment(1);
    // The worker's next report on this job is decided without reading its history.
    service.states.put(&got.stream, state.clone());
    Ok(Claimed {
        state,
        history: got.history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_has_one_placeholder_of_each_kind_where_the_values_go() {
        let claim = Claim {
            worker_id: "w".into(),
            machine_id: "m".into(),
            ..Claim::default()
        };
        let t = template(&claim, 1000, 1_800_000_000_000, &CommandContext::new());
        assert_eq!(t.matches(TEMPLATE_ID).count(), 2, "{t}");
        assert_eq!(t.matches(TEMPLATE_VERSION).count(), 1);
        assert_eq!(t.matches(TEMPLATE_ATTEMPT).count(), 1);
        let filled = jobsource_eventstore::queue::fill_template(
            &t,
            "0192e4a0-0000-7000-8000-000000000001",
            4,
            2,
        );
        let env: jobsource_eventstore::Envelope =
            serde_json::from_str(&filled).expect("a filled template is an envelope");
        assert_eq!(env.version, 4);
        assert_eq!(env.stream, "job-0192e4a0-0000-7000-8000-000000000001");
        assert_eq!(env.data.to_value()["attempt"], 2);
        assert_eq!(
            env.data.to_value()["lease_expires_at"],
            "2027-01-15T08:00:01Z"
        );
    }
}

#[cfg(test)]
mod wake_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use jobsource_domain::job::SubmitJob;
    use jobsource_eventstore::{EventStore, MemoryStore, StoreConfig};

    use super::*;

    /// Paused time: the clock moves only when every task waits on a timer, so a waiter
    /// woken by the submission (not by its 100 ms poll) answers at the same instant.
    #[tokio::test(start_paused = true)]
    async fn a_submission_wakes_a_waiting_claim_at_once() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
        let service = Arc::new(Service::new(store, None));
        let waiters: Vec<_> = (0..32)
            .map(|_| {
                let service = service.clone();
                tokio::spawn(async move {
                    let claim = Claim {
                        worker_id: "w".into(),
                        machine_id: "m".into(),
                        capabilities: vec!["upscale".into()],
                        wait_ms: Some(20_000),
                        ..Claim::default()
                    };
                    let got = super::claim(&service, &claim, &CommandContext::new()).await;
                    (got.map(|g| g.is_some()), tokio::time::Instant::now())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let submitted = tokio::time::Instant::now();
        for _ in 0..32 {
            service
                .submit_job(
                    SubmitJob {
                        job_type: "upscale".into(),
                        ..SubmitJob::default()
                    },
                    &CommandContext::new(),
                )
                .await
                .expect("submit");
        }
        for waiter in waiters {
            let (got, at) = waiter.await.expect("waiter");
            assert!(got.expect("claim"), "the waiter got the job");
            // Woken by the submission, not by the 100 ms poll (generous: a loaded CI box).
            assert!(
                at.duration_since(submitted) < Duration::from_millis(10),
                "{:?}",
                at.duration_since(submitted)
            );
        }
    }
}

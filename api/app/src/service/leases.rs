//! Job leases: heartbeats that renew them, and the durable timers that expire them.
//!
//! A lease lives in the store's queue index (started in the same atomic call as its
//! `job_assigned`, ended by the append that completes, fails or expires the attempt), so
//! it is exactly as durable as the events: a process killed with `kill -9` loses no
//! deadline, and a deadline that passed while nothing ran is found by the first sweep
//! after start. Renewals (heartbeats, progress reports) move the deadline in the index
//! without an event; the event log records each assignment's first deadline.
//!
//! Expiry appends `job_lease_expired` + `job_failed` (code `LEASE_EXPIRED`) with the
//! version check, an idempotency key per job and attempt, and a store-side precondition
//! that the lease is still due: a renewal that wins the race cancels the expiry, and two
//! instances sweeping at once produce one expiry (the loser gets the recorded result).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobsource_domain::job::{ExpireLease, JobCommand};
use jobsource_domain::{job_stream, DomainError};
use jobsource_eventstore::queue::{now_ms, STREAM_PREFIX};
use jobsource_eventstore::{Idempotency, LeaseEntry};
use jobsource_projections::subscriber::lease::Claims;
use tokio::sync::watch;
use uuid::Uuid;

use super::queue::time_of;
use super::{CommandContext, Service, ServiceError};

/// Leases expired per partition per sweep (the rest wait for the next sweep).
const SWEEP_BATCH: usize = 256;

/// Renews `worker_id`'s lease on job `id`; the new deadline. 409 (`NotHolder`, with the
/// current status) when that worker does not hold it; 404 when the job does not exist.
pub async fn heartbeat(
    service: &Service,
    id: Uuid,
    worker_id: &str,
) -> Result<DateTime<Utc>, ServiceError> {
    if worker_id.trim().is_empty() {
        return Err(ServiceError::validation("worker_id", "must not be empty"));
    }
    let stream = job_stream(id);
    if let Some(deadline) = service
        .store()
        .renew_lease(&stream, worker_id, now_ms())
        .await?
    {
        return Ok(time_of(deadline));
    }
    let job = service.load_job(id).await?;
    let Some(status) = job.status else {
        return Err(DomainError::NotFound { kind: "job" }.into());
    };
    Err(DomainError::NotHolder {
        kind: "job",
        worker_id: worker_id.to_owned(),
        status: status.to_string(),
    }
    .into())
}

/// Expires one lease (no-op when it was renewed or ended meanwhile). True when this call
/// appended the expiry.
pub async fn expire(
    service: &Service,
    lease: &LeaseEntry,
    force: bool,
    reason: &str,
) -> Result<bool, ServiceError> {
    let Some(id) = lease
        .stream
        .strip_prefix(STREAM_PREFIX)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Ok(false);
    };
    let key = format!("lease-expired:{id}:{}", lease.attempt);
    let ctx = CommandContext {
        idempotency: Some(Idempotency::new(key, format!("attempt-{}", lease.attempt))),
        actor: Some("lease-timer".into()),
        ..CommandContext::new()
    };
    let command = JobCommand::ExpireLease(ExpireLease {
        attempt: lease.attempt,
        retry_at: None,
        reason: Some(reason.to_owned()),
        force,
    });
    match service.job(id, command, &ctx).await {
        Ok(outcome) => {
            if !outcome.replayed {
                metrics::counter!(crate::metrics::LEASES_EXPIRED).increment(1);
                tracing::info!(job_id = %id, attempt = lease.attempt, worker_id = %lease.worker_id,
                    machine_id = %lease.machine_id, reason, "job lease expired");
            }
            Ok(!outcome.replayed)
        }
        // Renewed, completed or already expired by another instance: nothing to do.
        Err(ServiceError::LeaseNotDue)
        | Err(ServiceError::Domain(DomainError::InvalidTransition { .. })) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One sweep over every partition: expires the leases that are due. The number expired.
pub async fn sweep(service: &Service) -> Result<usize, ServiceError> {
    sweep_partitions(service, |_| true).await
}

/// [`sweep`] of the partitions `owned` says this instance holds (scale-out: each
/// partition's timers are swept by its lease holder only).
pub async fn sweep_partitions(
    service: &Service,
    owned: impl Fn(u32) -> bool,
) -> Result<usize, ServiceError> {
    let store = service.store();
    let mut expired = 0;
    for p in (0..store.partitions()).filter(|p| owned(*p)) {
        for lease in store.due_leases(p, now_ms(), SWEEP_BATCH).await? {
            if expire(service, &lease, false, "lease expired").await? {
                expired += 1;
            }
        }
    }
    Ok(expired)
}

/// Expires at once every lease held on `machine_id` (it went offline). The number expired.
pub async fn expire_machine_leases(
    service: &Service,
    machine_id: &str,
) -> Result<usize, ServiceError> {
    let mut expired = 0;
    for lease in service.store().leases_of_machine(machine_id).await? {
        if expire(
            service,
            &lease,
            true,
            &format!("machine {machine_id} went offline"),
        )
        .await?
        {
            expired += 1;
        }
    }
    Ok(expired)
}

/// Sweeps every `interval` until `shutdown` turns true. Outages are logged and waited out.
///
/// With `claims` (several instances on one store), the partitions' timers are leased like
/// any consumer (`timers`): each instance sweeps the partitions it holds. The expiry's own
/// checks keep a sweep by a former holder harmless.
pub async fn run_sweeper(
    service: Arc<Service>,
    interval: Duration,
    claims: Option<Arc<Claims>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Some(c) = &claims {
            if let Err(e) = c.refresh().await {
                tracing::warn!(error = %e, "timer leases cannot be refreshed; retrying");
            }
        }
        let owned = |p: u32| claims.as_ref().is_none_or(|c| c.epoch(p).is_some());
        if let Err(e) = sweep_partitions(&service, owned).await {
            tracing::warn!(error = %e, "lease sweep failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    if let Some(c) = &claims {
        c.release_all().await;
    }
}

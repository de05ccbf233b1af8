//! The machine timeout sweeper: every second, machines not seen for longer than the
//! timeout (`JOBSOURCE_MACHINE_TIMEOUT_SECS`) and not offline are marked offline, and the
//! job leases they hold are expired at once.
//!
//! Finding them: last-seen times only move forward, so a machine becomes stale exactly
//! when the cutoff (`now - timeout`) passes its time. Each sweep reads the machines whose
//! time lies between the previous sweep's cutoff and this one's (the first sweep of a
//! process reads everything up to its cutoff), plus the machines a previous sweep could
//! not finish. A machine that heartbeats again gets a new time and is found again once
//! that one goes stale; one already offline is left alone.
//!
//! Marking one: its stream is folded, and `machine_status_changed {status: offline,
//! details: "no heartbeat for Ns"}` is appended with the expected version the decision
//! was made against (`Exact`) and an idempotency key derived from that version. Two
//! sweepers (two instances of the service) racing on one machine therefore write one
//! event: the loser sees the key's recorded answer or a version conflict, and leaves it —
//! someone else did it (the winner expires the leases). A heartbeat that lands between
//! the read and the append is caught by re-reading the machine's time just before
//! appending; one that lands after the append brings the machine back online.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobsource_domain::machine::{Machine, MachineCommand, MachineStatus, MarkOffline};
use jobsource_domain::machine_stream;
use jobsource_eventstore::Idempotency;
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

use super::seen::SeenStore;
use crate::service::{fingerprint, CommandContext, Service, ServiceError};

/// Default `JOBSOURCE_MACHINE_TIMEOUT_SECS`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How often [`Sweeper::run`] sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The actor recorded in the metadata of the sweeper's events.
pub const ACTOR: &str = "machine-sweeper";

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Machines this sweep marked offline.
    pub marked: Vec<String>,
    /// Stale machines someone else marked offline first (another sweeper), or that
    /// changed under this sweep and are looked at again later.
    pub lost: Vec<String>,
    /// Job leases expired because their machine was marked offline.
    pub leases_expired: usize,
}

#[derive(Default)]
struct Progress {
    /// Cutoff of the last completed sweep (`None`: none yet, read from the start).
    cutoff: Option<i64>,
    /// Machines to look at again (a sweep failed on them), with the time they were seen.
    retry: HashMap<String, i64>,
}

/// Marks machines that stopped heartbeating offline.
pub struct Sweeper {
    service: Arc<Service>,
    seen: Arc<dyn SeenStore>,
    timeout: Duration,
    progress: Mutex<Progress>,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What happened to one stale machine.
enum Swept {
    /// This sweep marked it offline.
    Marked,
    /// Someone else did (the idempotency key's recorded answer).
    Lost,
    /// Its stream moved under the sweep: look again next time.
    Changed,
    /// Not registered, already offline, or seen again.
    Skipped,
}

impl Sweeper {
    /// A sweeper over `service` (the log) and `seen` (last-seen times).
    pub fn new(service: Arc<Service>, seen: Arc<dyn SeenStore>, timeout: Duration) -> Self {
        Sweeper {
            service,
            seen,
            timeout,
            progress: Mutex::new(Progress::default()),
        }
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One sweep as of `now`.
    pub async fn sweep_once(&self, now: DateTime<Utc>) -> Result<SweepReport, ServiceError> {
        let mut progress = self.progress.lock().await;
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let now_ms = now.timestamp_millis();
        let cutoff = now_ms.saturating_sub(timeout_ms);
        let after = progress.cutoff.unwrap_or(i64::MIN);
        let mut candidates: HashMap<String, i64> = std::mem::take(&mut progress.retry);
        for (id, at) in self.seen.seen_between(after, cutoff).await? {
            candidates.insert(id, at);
        }
        let mut report = SweepReport::default();
        let mut ids: Vec<(String, i64)> = candidates.into_iter().collect();
        ids.sort();
        for (id, seen_ms) in ids {
            match self.sweep_machine(&id, seen_ms, cutoff, now_ms).await {
                Ok(Swept::Marked) => {
                    // The machine's job leases expire now, not at their own deadline. A
                    // failure here is logged: the leases still expire at their deadline.
                    match crate::service::leases::expire_machine_leases(&self.service, &id).await {
                        Ok(n) => report.leases_expired += n,
                        Err(e) => tracing::warn!(machine_id = %id, error = %e,
                            "cannot expire the leases of a machine marked offline"),
                    }
                    report.marked.push(id);
                }
                Ok(Swept::Lost) => report.lost.push(id),
                Ok(Swept::Changed) => {
                    progress.retry.insert(id.clone(), seen_ms);
                    report.lost.push(id);
                }
                Ok(Swept::Skipped) => {}
                Err(e) => {
                    tracing::warn!(machine_id = %id, error = %e,
                        "machine timeout sweep failed; trying again next sweep");
                    progress.retry.insert(id, seen_ms);
                }
            }
        }
        progress.cutoff = Some(progress.cutoff.map_or(cutoff, |c| c.max(cutoff)));
        Ok(report)
    }

    async fn sweep_machine(
        &self,
        id: &str,
        seen_ms: i64,
        cutoff: i64,
        now_ms: i64,
    ) -> Result<Swept, ServiceError> {
        let stream = machine_stream(id);
        let (machine, _) = self.service.load::<Machine>(&stream).await?;
        if matches!(machine.status, None | Some(MachineStatus::Offline)) {
            return Ok(Swept::Skipped);
        }
        // A heartbeat since the candidates were read: not stale any more.
        let latest = self.seen.last_seen(id).await?.unwrap_or(seen_ms);
        if latest > cutoff {
            return Ok(Swept::Skipped);
        }
        let version = machine.version;
        let key = format!("machine-timeout:{version}");
        let ctx = CommandContext {
            correlation_id: Uuid::now_v7().to_string(),
            causation_id: None,
            idempotency: Some(Idempotency::new(
                key.clone(),
                fingerprint(format!("{stream}\0{key}").as_bytes()),
            )),
            expected_version: Some(version),
            actor: Some(ACTOR.to_owned()),
        };
        let secs = now_ms.saturating_sub(latest).max(0) / 1000;
        let command = MachineCommand::MarkOffline(MarkOffline {
            details: format!("no heartbeat for {secs}s"),
        });
        match self
            .service
            .execute::<Machine>(&stream, command, false, &ctx)
            .await
        {
            Ok(outcome) if outcome.replayed || outcome.position.is_none() => Ok(Swept::Lost),
            Ok(_) => {
                tracing::info!(machine_id = %id, seconds = secs, "machine marked offline: no heartbeat");
                Ok(Swept::Marked)
            }
            // Another writer moved the stream first (a sweeper, or a heartbeat): the next
            // sweeps look at the machine again if it is still stale.
            Err(ServiceError::VersionConflict { .. } | ServiceError::Contention { .. }) => {
                Ok(Swept::Changed)
            }
            Err(e) => Err(e),
        }
    }

    /// Sweeps every [`SWEEP_EVERY`] until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            match self.sweep_once(Utc::now()).await {
                Ok(r) if !r.marked.is_empty() => {
                    tracing::debug!(
                        marked = r.marked.len(),
                        leases = r.leases_expired,
                        "machine sweep"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "machine timeout sweep failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

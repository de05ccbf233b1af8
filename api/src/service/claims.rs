//! Worker claims: the highest-priority pending job (FIFO within a priority) whose
//! required capabilities the worker has, assigned with optimistic concurrency.
//!
//! Candidates come from the read model's pending queue, which may lag; the assignment is
//! decided against the job's folded history under its stream lock and appended with its
//! expected version, so two claimers (in this process or another) can never both get a
//! job: the loser sees `InvalidTransition` (or a conflict) and moves on to the next one.

use jobsource_domain::job::{AssignJob, Job, JobCommand};
use jobsource_domain::DomainError;

use super::{CommandContext, Outcome, Service, ServiceError};
use crate::read::{PendingEntry, ReadSide};

/// Candidates read per page of the pending queue.
const PAGE: usize = 64;
/// Candidates examined before answering "nothing for you" (bounds one claim's work).
const MAX_EXAMINED: usize = 2048;

/// A worker asking for work.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Worker id.
    pub worker_id: String,
    /// Machine id.
    pub machine_id: String,
    /// Capabilities the worker has.
    pub capabilities: Vec<String>,
}

/// Whether a worker with `capabilities` can run `job_type` with `required` capabilities
/// (none given = the type itself, SPEC section 2).
pub fn capable(capabilities: &[String], job_type: &str, required: Option<&[String]>) -> bool {
    match required {
        Some(req) if !req.is_empty() => req.iter().all(|r| capabilities.contains(r)),
        _ => capabilities.iter().any(|c| c == job_type),
    }
}

fn required_capabilities(job: &crate::read::JobView) -> Option<Vec<String>> {
    job.requirements
        .as_ref()?
        .get("capabilities")?
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
}

/// Claims a job for `claim`; `Ok(None)` when nothing pending fits.
pub async fn claim(
    service: &Service,
    read: &dyn ReadSide,
    claim: &Claim,
    ctx: &CommandContext,
) -> Result<Option<Outcome<Job>>, ServiceError> {
    if claim.worker_id.trim().is_empty() {
        return Err(ServiceError::validation("worker_id", "must not be empty"));
    }
    if claim.machine_id.trim().is_empty() {
        return Err(ServiceError::validation("machine_id", "must not be empty"));
    }
    let mut after: Option<PendingEntry> = None;
    let mut examined = 0;
    while examined < MAX_EXAMINED {
        let page = read.pending(after, PAGE).await?;
        let Some(last) = page.last().copied() else {
            return Ok(None);
        };
        for entry in page {
            examined += 1;
            let Some(view) = read.job(entry.job_id).await? else {
                continue;
            };
            let required = required_capabilities(&view);
            if view.status != "pending"
                || !capable(&claim.capabilities, &view.job_type, required.as_deref())
            {
                continue;
            }
            let assign = JobCommand::Assign(AssignJob {
                worker_id: claim.worker_id.clone(),
                machine_id: claim.machine_id.clone(),
            });
            match service.job(entry.job_id, assign, ctx).await {
                Ok(outcome) => return Ok(Some(outcome)),
                // Taken by another claimer, cancelled, or not yet visible: try the next.
                Err(ServiceError::Domain(
                    DomainError::InvalidTransition { .. } | DomainError::NotFound { .. },
                ))
                | Err(ServiceError::Contention { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        after = Some(last);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::capable;

    #[test]
    fn capabilities() {
        let caps = vec!["upscale".to_owned(), "gpu".to_owned()];
        assert!(capable(&caps, "upscale", None));
        assert!(!capable(&caps, "text-to-image", None));
        assert!(capable(&caps, "x", Some(&["gpu".to_owned()])));
        assert!(!capable(
            &caps,
            "x",
            Some(&["gpu".to_owned(), "cuda".to_owned()])
        ));
        assert!(capable(&caps, "upscale", Some(&[])));
    }
}

//! Request bodies of the job commands (submit, assign, progress, complete, fail, cancel,
//! claim, heartbeat) and their conversion into domain commands.

use super::*;

pub(super) fn in_range(
    field: &str,
    v: Option<i64>,
    lo: i64,
    hi: i64,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    match v {
        Some(n) if n < lo || n > hi => {
            errors.push(FieldError::new(
                field,
                format!("must be between {lo} and {hi}"),
            ));
            None
        }
        other => other,
    }
}

/// Requirements of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequirementsBody {
    /// Capabilities a worker must have (default: `[type]`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// GPU memory in GB.
    #[serde(default)]
    pub gpu_memory: Option<f64>,
}

/// `POST /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJobRequest {
    /// Job type, `[a-z0-9][a-z0-9._-]{0,63}`.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Free-form parameters.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    /// 0..=100, default 50.
    #[serde(default, deserialize_with = "crate::number::opt_i64")]
    pub priority: Option<i64>,
    /// Requirements (default `{capabilities: [type]}`).
    #[serde(default)]
    pub requirements: Option<RequirementsBody>,
    /// Receives `job_completed` and terminal `job_failed`.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Jobs that must complete first (the job waits until then).
    #[serde(default)]
    pub depends_on: Vec<Uuid>,
    /// 0..=100, default 3.
    #[serde(default, deserialize_with = "crate::number::opt_i64")]
    pub max_retries: Option<i64>,
    /// Not claimable for this many ms (0..=31536000000, a year); not with `run_at`.
    #[schema(minimum = 0, maximum = 31536000000_i64)]
    #[serde(default, deserialize_with = "crate::number::opt_i64")]
    pub delay_ms: Option<i64>,
    /// Not claimable before this time (RFC 3339, at most a year ahead); not with
    /// `delay_ms`. A past time means at once.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
}

/// Longest delay a submission may ask for (a year).
pub const MAX_DELAY_MS: i64 = 365 * 24 * 3600 * 1000;

impl SubmitJobRequest {
    /// The domain command (range errors as a validation failure); `now` resolves
    /// `delay_ms` into the job's `available_at`.
    pub fn into_command(self, now: DateTime<Utc>) -> Result<SubmitJob, DomainError> {
        let mut errors = Vec::new();
        let priority = in_range("priority", self.priority, 0, 100, &mut errors);
        let max_retries = in_range("max_retries", self.max_retries, 0, 100, &mut errors);
        let delay = in_range("delay_ms", self.delay_ms, 0, MAX_DELAY_MS, &mut errors);
        let latest = now + chrono::Duration::milliseconds(MAX_DELAY_MS);
        let available_at = match (delay, self.run_at.as_deref()) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    "run_at",
                    "give delay_ms or run_at, not both",
                ));
                None
            }
            (Some(d), None) => Some(now + chrono::Duration::milliseconds(d)),
            (None, Some(t)) => match DateTime::parse_from_rfc3339(t) {
                Ok(t) if t.with_timezone(&Utc) > latest => {
                    errors.push(FieldError::new("run_at", "at most a year ahead"));
                    None
                }
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(e) => {
                    errors.push(FieldError::new(
                        "run_at",
                        format!("not an RFC 3339 time: {e}"),
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        if !errors.is_empty() {
            return Err(DomainError::Validation(errors));
        }
        let defaults = SubmitJob::default();
        Ok(SubmitJob {
            job_id: Uuid::nil(),
            job_type: self.job_type,
            prompt: self.prompt,
            parameters: self.parameters,
            priority: priority.map_or(defaults.priority, |p| p as u8),
            requirements: self.requirements.map(|r| Requirements {
                capabilities: r.capabilities,
                gpu_memory: r.gpu_memory,
            }),
            webhook_url: self.webhook_url,
            workflow_id: None,
            step_index: None,
            depends_on: self.depends_on,
            max_retries: max_retries.map_or(defaults.max_retries, |m| m as u32),
            available_at: available_at.filter(|t| *t > now),
        })
    }
}

/// `POST /v1/jobs/{id}/assign`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// Worker taking the job.
    pub worker_id: String,
    /// Machine the worker runs on.
    pub machine_id: String,
    /// Lease length, 1..=86400 (default `JOBSOURCE_JOB_LEASE_SECS`).
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(default, deserialize_with = "crate::number::opt_i64")]
    pub lease_seconds: Option<i64>,
}

impl AssignRequest {
    /// The domain command; `now` starts the lease (`None` length: the service default).
    pub fn into_command(self, now: DateTime<Utc>) -> Result<AssignJob, DomainError> {
        let mut errors = Vec::new();
        let lease = in_range("lease_seconds", self.lease_seconds, 1, 86_400, &mut errors);
        if !errors.is_empty() {
            return Err(DomainError::Validation(errors));
        }
        Ok(AssignJob {
            lease_expires_at: lease.map(|s| now + chrono::Duration::seconds(s)),
            worker_id: self.worker_id,
            machine_id: self.machine_id,
        })
    }
}

/// `POST /v1/jobs/{id}/progress`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// 0..=100; never decreases within an attempt.
    #[serde(deserialize_with = "crate::number::i64")]
    pub progress: i64,
    /// The reporting worker: when given, it must hold the job (else 409). A report
    /// renews the lease.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Stage name.
    #[serde(default)]
    pub stage: Option<String>,
    /// Message.
    #[serde(default)]
    pub message: Option<String>,
}

impl ProgressRequest {
    /// The domain command.
    pub fn into_command(self) -> Result<ReportProgress, DomainError> {
        let mut errors = Vec::new();
        let progress = in_range("progress", Some(self.progress), 0, 100, &mut errors);
        match progress {
            Some(p) if errors.is_empty() => Ok(ReportProgress {
                worker_id: self.worker_id,
                progress: p as u8,
                stage: self.stage,
                message: self.message,
            }),
            _ => Err(DomainError::Validation(errors)),
        }
    }
}

/// `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// Result (any JSON).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub result: Value,
    /// Run time.
    #[serde(default, deserialize_with = "crate::number::opt_u64")]
    pub duration_ms: Option<u64>,
    /// The reporting worker: when given, it must hold the job (else 409).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Claim the worker's next job in the same call (needs `worker_id`); the claim body
    /// of `POST /v1/workers/{worker_id}/claim`, answered in `next`.
    #[serde(default)]
    pub next: Option<ClaimRequest>,
}

impl From<CompleteRequest> for CompleteJob {
    fn from(r: CompleteRequest) -> Self {
        CompleteJob {
            worker_id: r.worker_id,
            result: r.result,
            duration_ms: r.duration_ms,
        }
    }
}

/// An error reported by a worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobErrorBody {
    /// Machine-readable code.
    pub code: String,
    /// Message.
    pub message: String,
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// What went wrong.
    pub error: JobErrorBody,
    /// Retry if the budget allows (default true).
    #[serde(default = "yes")]
    pub retryable: bool,
    /// The reporting worker: when given, it must hold the job (else 409).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Claim the worker's next job in the same call (needs `worker_id`); the claim body
    /// of `POST /v1/workers/{worker_id}/claim`, answered in `next`.
    #[serde(default)]
    pub next: Option<ClaimRequest>,
}

pub(super) fn yes() -> bool {
    true
}

impl From<FailRequest> for FailJob {
    fn from(r: FailRequest) -> Self {
        FailJob {
            retry_at: None,
            worker_id: r.worker_id,
            error: JobError {
                code: r.error.code,
                message: r.error.message,
            },
            retryable: r.retryable,
        }
    }
}

/// `POST /v1/jobs/{id}/cancel` and `POST /v1/workflows/{id}/cancel` (body optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

impl From<CancelRequest> for CancelJob {
    fn from(r: CancelRequest) -> Self {
        CancelJob { reason: r.reason }
    }
}

/// `POST /v1/workers/{worker_id}/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Machine the worker runs on.
    pub machine_id: String,
    /// What the worker can run (a job's required capabilities must all be here).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// GPU memory the worker offers, in GB (0..=10000). Jobs needing more are not
    /// offered; without it, only jobs that need no GPU memory are.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10000)]
    pub gpu_memory: Option<f64>,
    /// Lease length, 1..=86400 (default `JOBSOURCE_JOB_LEASE_SECS`).
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(default, deserialize_with = "crate::number::opt_i64")]
    pub lease_seconds: Option<i64>,
    /// Long-poll up to this long (0..=30000 ms) when nothing is ready, instead of an
    /// immediate 204.
    #[schema(minimum = 0, maximum = 30000)]
    #[serde(default, deserialize_with = "crate::number::opt_i64")]
    pub wait_ms: Option<i64>,
}

/// `POST /v1/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobHeartbeatRequest {
    /// The worker holding the job.
    pub worker_id: String,
}

/// Answer of a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobHeartbeatResponse {
    /// Job id.
    pub job_id: Uuid,
    /// The holder.
    pub worker_id: String,
    /// The renewed deadline.
    pub lease_expires_at: String,
}

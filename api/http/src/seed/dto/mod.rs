//! Request and response bodies of the seed API, field for field as its guides give them
//! (Phase 3 `JobSubmissionRequest`, `JobStatusResponse`, `WorkflowCreationRequest`,
//! `WorkflowStatusResponse`, ...).
//!
//! Requests accept unknown fields (seed clients send extras such as `worker_id`) and treat
//! every field as optional, so a missing one is reported by the domain's validation in the
//! seed's error shape rather than by the JSON parser. Responses always carry every field
//! the seed lists; one without a value is `null` (see the module docs of [`super`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::SeedRequest;
use jobsource_app::read::{JobView, StepView, WorkflowView};

mod responses;
pub use responses::*;

// ---- requests -------------------------------------------------------------------------

/// `POST /api/jobs/submit` (the seed's `JobSubmissionRequest`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedSubmitRequest {
    /// Job type (`text-to-image`, `upscale`, ... when the catalog is configured).
    #[serde(rename = "type", default)]
    pub job_type: Option<String>,
    /// Prompt (required for `text-to-image` by the shipped catalog).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Free-form parameters.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// 0..=100, default 50; higher is claimed first.
    #[serde(default, deserialize_with = "crate::number::opt_i64")]
    pub priority: Option<i64>,
    /// Receives `job_completed` / terminal `job_failed`.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// `{capabilities[], gpu_memory}`; defaults from the catalog or `{capabilities:[type]}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub requirements: Option<Value>,
    /// Job ids that must complete first (the job starts `waiting`).
    #[serde(default)]
    pub depends_on: Option<Vec<Uuid>>,
    /// Retries after retryable failures (default 3).
    #[serde(default, deserialize_with = "crate::number::opt_i64")]
    pub max_retries: Option<i64>,
}

impl SeedRequest for SeedSubmitRequest {
    const FAILED_CODE: &'static str = "JOB_SUBMISSION_FAILED";
    const SUBJECT: &'static str = "Job";
}

/// `POST /api/jobs/{id}/cancel` and `POST /api/workflows/{id}/cancel`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SeedCancelRequest {
    /// Why (stored on the cancellation event).
    #[serde(default)]
    pub reason: Option<String>,
}

impl SeedRequest for SeedCancelRequest {
    const FAILED_CODE: &'static str = "MALFORMED_REQUEST";
    const SUBJECT: &'static str = "Request";
}

/// One step of [`SeedWorkflowRequest`] (the seed's `WorkflowStep`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedStepRequest {
    /// Job type of the step's job.
    #[serde(rename = "type", default)]
    pub job_type: Option<String>,
    /// Prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Parameters.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Indices of earlier steps this one waits for.
    #[serde(default, deserialize_with = "crate::number::opt_vec_u32")]
    pub depends_on: Option<Vec<u32>>,
}

/// `POST /api/workflows` (the seed's `WorkflowCreationRequest`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedWorkflowRequest {
    /// Name (required, non-empty).
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// 1 to 50 steps.
    #[serde(default)]
    pub steps: Option<Vec<SeedStepRequest>>,
    /// Receives `workflow_completed` / `workflow_failed`.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

impl SeedRequest for SeedWorkflowRequest {
    const FAILED_CODE: &'static str = "WORKFLOW_CREATION_FAILED";
    const SUBJECT: &'static str = "Workflow";
}

/// `POST /api/internal/jobs/{id}/progress` (sent by workers).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedProgressRequest {
    /// 0..=100 (fractions are rounded); never decreases within an attempt.
    #[serde(default)]
    pub progress: Option<f64>,
    /// Stage name.
    #[serde(default)]
    pub stage: Option<String>,
    /// Message.
    #[serde(default)]
    pub message: Option<String>,
    /// The reporting worker: with `machine_id`, a report on a pending job claims it for
    /// this worker; on a job another worker holds it is refused (409).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The reporting worker's machine.
    #[serde(default)]
    pub machine_id: Option<String>,
}

impl SeedRequest for SeedProgressRequest {
    const FAILED_CODE: &'static str = "VALIDATION_FAILED";
    const SUBJECT: &'static str = "Request";
}

/// `POST /api/internal/jobs/{id}/complete` (sent by workers).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedCompleteRequest {
    /// The job's result (any JSON).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub result: Value,
    /// Run time in milliseconds (the seed's default was 0); fractions are rounded.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub duration: Option<f64>,
    /// The reporting worker: with `machine_id`, a report on a pending job claims it for
    /// this worker; on a job another worker holds it is refused (409).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The reporting worker's machine.
    #[serde(default)]
    pub machine_id: Option<String>,
}

impl SeedRequest for SeedCompleteRequest {
    const FAILED_CODE: &'static str = "VALIDATION_FAILED";
    const SUBJECT: &'static str = "Request";
}

// ---- responses ------------------------------------------------------------------------

/// `?timeframe=` of the stats routes.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SeedTimeframeQuery {
    /// `hour`, `day` (default; also when empty) or `week`.
    #[serde(default)]
    pub timeframe: Option<String>,
}

impl SeedRequest for SeedTimeframeQuery {
    const FAILED_CODE: &'static str = "INVALID_TIMEFRAME";
    const SUBJECT: &'static str = "Query";
}

//! Request and response bodies of the `/v1` surface (also the OpenAPI schemas).
//!
//! Numeric fields with a range (`priority`, `progress`, `max_retries`) are read as wide
//! integers and range-checked into `VALIDATION_FAILED` with the field named, rather than
//! failing JSON decoding with a less helpful message.

use chrono::{DateTime, Utc};
use jobsource_domain::job::{
    AssignJob, CancelJob, CompleteJob, FailJob, JobError, ReportProgress, Requirements, SubmitJob,
};
use jobsource_domain::workflow::{CreateWorkflow, StepSpec};
use jobsource_domain::{DomainError, FieldError};
use jobsource_eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use jobsource_app::read::JobView;

mod commands;
mod params;
mod responses;
pub use commands::*;
pub use params::*;
pub use responses::*;

/// One workflow step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// Job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Parameters.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Indices of earlier steps this one waits for.
    #[serde(default, deserialize_with = "crate::number::vec_u32")]
    pub depends_on: Vec<u32>,
}

/// `POST /v1/workflows`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflowRequest {
    /// Name (required, non-empty).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// 1..=50 steps; a step may depend only on earlier ones.
    pub steps: Vec<StepRequest>,
    /// Receives `workflow_completed` and `workflow_failed`.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

impl From<CreateWorkflowRequest> for CreateWorkflow {
    fn from(r: CreateWorkflowRequest) -> Self {
        CreateWorkflow {
            workflow_id: Uuid::nil(),
            job_ids: Vec::new(),
            name: r.name,
            description: r.description,
            steps: r
                .steps
                .into_iter()
                .map(|s| StepSpec {
                    job_type: s.job_type,
                    prompt: s.prompt,
                    parameters: s.parameters,
                    depends_on: s.depends_on,
                })
                .collect(),
            webhook_url: r.webhook_url,
        }
    }
}

//! Query parameters of the `/v1` reads and the projection admin bodies.

use super::*;

/// `GET /v1/jobs/{id}` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobGetParams {
    /// Fold the history up to this version (time travel).
    pub as_of_version: Option<u64>,
    /// Fold the history up to this time (RFC 3339).
    pub as_of: Option<String>,
    /// Wait until the read model has passed this position (read-your-writes).
    pub min_position: Option<String>,
}

/// `GET /v1/jobs` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    /// Status filter.
    pub status: Option<String>,
    /// Type filter.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub job_type: Option<String>,
    /// Workflow filter.
    pub workflow_id: Option<Uuid>,
    /// Page size (1..=500, default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Wait until the list model has passed this position.
    pub min_position: Option<String>,
}

/// `GET /v1/workflows` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowListParams {
    /// Status filter.
    pub status: Option<String>,
    /// Page size (1..=500, default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Wait until the list model has passed this position.
    pub min_position: Option<String>,
}

/// Stats parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// `hour`, `day` or `week` (default: all time).
    pub timeframe: Option<String>,
    /// Wait until the list model has passed this position.
    pub min_position: Option<String>,
}

/// `GET /v1/workflows/{id}` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MinPositionParams {
    /// Wait until the read model has passed this position.
    pub min_position: Option<String>,
}

/// `GET /v1/events` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Offset: `start` (default), `end`, an RFC 3339 time, or `p@id,...` positions.
    pub after: Option<String>,
    /// Type glob, e.g. `job_*`.
    pub types: Option<String>,
    /// One stream only.
    pub stream: Option<String>,
    /// One correlation id only.
    pub correlation_id: Option<String>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<usize>,
}

/// `POST /v1/projections/{name}/rebuild`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Offset to rebuild from (default `start`).
    #[serde(default)]
    pub from: Option<String>,
}

/// Answer of a rebuild request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RebuildResponse {
    /// Projection.
    pub projection: String,
    /// Offset it rebuilds from.
    pub from: String,
    /// Where to watch progress.
    pub status_url: String,
}

/// Answer of a resume request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResumeResponse {
    /// Consumer.
    pub projection: String,
    /// Partitions that were stalled and now run again.
    pub resumed_partitions: u64,
}

/// `GET /v1/projections`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectionsResponse {
    /// Per projection and partition.
    #[schema(value_type = Vec<crate::schema::ProjectionStatus>)]
    pub projections: Vec<jobsource_app::read::ProjectionStatus>,
}

//! Pages, list filters and stats of the list queries.

use super::*;

/// A page of a list and the cursor of the next one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    /// Items, oldest first (ids are UUID v7).
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Status.
    pub status: Option<String>,
    /// Type.
    pub job_type: Option<String>,
    /// Workflow.
    pub workflow_id: Option<Uuid>,
    /// Page size.
    pub limit: usize,
    /// Only ids after this one.
    pub after: Option<Uuid>,
}

/// Filters of `GET /v1/workflows`.
#[derive(Debug, Clone, Default)]
pub struct WorkflowQuery {
    /// Status.
    pub status: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Only ids after this one.
    pub after: Option<Uuid>,
}

/// `GET /v1/jobs/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStats {
    /// Jobs created in the timeframe.
    pub total: u64,
    /// Count per status.
    pub by_status: BTreeMap<String, u64>,
    /// Count per type.
    pub by_type: BTreeMap<String, u64>,
}

/// `GET /v1/workflows/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStats {
    /// Workflows created in the timeframe.
    pub total: u64,
    /// Count per status.
    pub by_status: BTreeMap<String, u64>,
}

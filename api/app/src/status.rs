//! Progress rows of the read models and background subscribers (`GET /v1/projections`,
//! the lag and stall gauges), and the trait background subscribers report them through.

use serde::{Deserialize, Serialize};

/// A read model's progress on one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionStatus {
    /// Projection name (`redis`, `postgres`, `archive`, `orchestrator`).
    pub projection: String,
    /// Partition.
    pub partition: u32,
    /// Last applied position (`<p>@<id>`).
    pub checkpoint: String,
    /// Events in the log after the checkpoint.
    pub lag: u64,
    /// `running|rebuilding|stalled|stopped`.
    pub state: String,
    /// Why it stalled.
    pub last_error: Option<String>,
}

/// A background subscriber that reports per-partition status (shown with projections).
#[async_trait::async_trait]
pub trait StatusSource: Send + Sync + 'static {
    /// One row per partition.
    async fn status_rows(&self) -> Vec<ProjectionStatus>;
}

//! Progress rows of the read models and background subscribers (`GET /v1/projections`,
//! the lag and stall gauges).

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
    /// The instance holding the partition's lease (several instances share the
    /// consumers; `null` in embedded mode or while nobody holds it).
    #[serde(default)]
    pub owner: Option<String>,
    /// When that lease runs out (RFC 3339).
    #[serde(default)]
    pub lease_expires_at: Option<String>,
    /// During a rebuild: `events_done`, `events_total`, `events_per_sec`, `eta_seconds`.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildStatus>,
}

/// A rebuild's progress, as status rows show it while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebuildStatus {
    /// Events applied to the new model so far.
    pub events_done: u64,
    /// Events to apply up to the head when the rebuild read it (when known).
    pub events_total: Option<u64>,
    /// Average rate since the rebuild started.
    pub events_per_sec: f64,
    /// Seconds left at that rate (when the total is known).
    pub eta_seconds: Option<f64>,
}

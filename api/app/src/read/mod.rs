//! The query side: what `GET` endpoints and worker claims read.
//!
//! [`ReadSide`] has two implementations with the same answers: [`full::FullReadSide`]
//! (the `redis` projection's hashes and pending zset for hot lookups and claims, the
//! `postgres` projection for lists and stats) and [`memory::MemoryReadModel`] (embedded
//! mode: everything folded in process). Read models lag the log by a few milliseconds;
//! a caller that must see its own write passes the position its command answered with,
//! and [`wait_for`] holds the query until the model has passed it.

mod archive_page;
mod error;
pub mod events;
pub mod fold;
pub mod full;
pub mod memory;
pub mod rebuilds;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsource_eventstore::{Offset, Position};
use uuid::Uuid;

pub use error::QueryError;
pub use jobsource_projections::view;
pub use jobsource_projections::view::machine as machine_view;
pub use jobsource_projections::view::{
    JobQuery, JobStats, JobView, MachineQuery, MachineView, Page, PendingEntry, QueueCounts,
    StepView, WorkerView, WorkflowQuery, WorkflowStats, WorkflowView,
};

pub use crate::status::ProjectionStatus;

/// Which read model a query is served from (for read-your-writes waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Job, workflow and machine lookups and the pending queue (`redis` projection).
    Hot,
    /// Lists and stats, the machine list included (`postgres` projection).
    Lists,
}

/// Queries every deployment answers.
#[async_trait]
pub trait ReadSide: Send + Sync + 'static {
    /// `embedded` or `redis+postgres`.
    fn mode(&self) -> &'static str;

    /// One job (hot model).
    async fn job(&self, id: Uuid) -> Result<Option<JobView>, QueryError>;

    /// A page of jobs, oldest first, filtered.
    async fn jobs(&self, query: &JobQuery) -> Result<Page<JobView>, QueryError>;

    /// Counts of jobs created since `since` (all when `None`).
    async fn job_stats(&self, since: Option<DateTime<Utc>>) -> Result<JobStats, QueryError>;

    /// One workflow with its steps (hot model).
    async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowView>, QueryError>;

    /// A page of workflows (without steps), oldest first.
    async fn workflows(&self, query: &WorkflowQuery) -> Result<Page<WorkflowView>, QueryError>;

    /// Counts of workflows created since `since`.
    async fn workflow_stats(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<WorkflowStats, QueryError>;

    /// Up to `limit` pending jobs in claim order (priority descending, then oldest first),
    /// strictly after `after` in that order.
    async fn pending(
        &self,
        after: Option<PendingEntry>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>, QueryError>;

    /// One machine (hot model; `last_heartbeat_at` is the time of its last own event).
    async fn machine(&self, id: &str) -> Result<Option<MachineView>, QueryError>;

    /// A page of machines ordered by id, filtered by status.
    async fn machines(&self, query: &MachineQuery) -> Result<Page<MachineView>, QueryError>;

    /// Whether `model` has applied the event at `position` (and everything before it in
    /// that partition).
    async fn has_reached(&self, model: Model, position: Position) -> Result<bool, QueryError>;

    /// Status of every projection per partition.
    async fn projections(&self) -> Result<Vec<ProjectionStatus>, QueryError>;

    /// Progress of the rebuilds this read side runs (none by default).
    fn rebuilds(&self) -> Vec<(String, rebuilds::RebuildStatus)> {
        Vec::new()
    }

    /// Starts rebuilding projection `name` from `from` in the background (the live model
    /// keeps serving until the swap). Unknown names are a 404-style validation error.
    async fn rebuild(&self, name: &str, from: Offset) -> Result<(), QueryError>;

    /// The queue structures of the hot model: pending jobs, assigned or running jobs,
    /// completed jobs and failed jobs (the seed's `jobs:pending` zset and
    /// `jobs:assigned|completed|failed` sets).
    async fn queue_counts(&self) -> Result<QueueCounts, QueryError>;

    /// A page of the audit log after `after` (see [`events`]).
    async fn events(
        &self,
        after: jobsource_eventstore::Cursor,
        filter: &events::EventFilter,
        limit: usize,
    ) -> Result<events::EventPage, QueryError>;

    /// Backend checks for `/health`: (name, `Ok` or the failure).
    async fn health(&self) -> Vec<(&'static str, Result<(), String>)>;
}

/// Waits (bounded by `timeout`) until `model` has passed `position`. Returns whether it did.
pub async fn wait_for(
    read: &dyn ReadSide,
    model: Model,
    position: Position,
    timeout: Duration,
) -> Result<bool, QueryError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    loop {
        if read.has_reached(model, position).await? {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

//! Embedded mode's read model: every query answered from state folded in process.
//!
//! One worker task reads the partition logs of the (in-memory) store from the model's
//! checkpoint and folds jobs, workflows and machines into ordered maps, keeping the pending
//! queue as a sorted set. Nothing persists: a restart begins empty, like the store under it.
//! Each entity keeps its last applied version, so an event seen twice changes nothing.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsource_domain::job::JobStatus;
use jobsource_eventstore::{Cursor, EventStore, LogId, Offset, Position, RecordedEvent};
use jobsource_projections::subscriber::{
    Handler, HandlerError, MemoryStatusStore, Outcome, Subscriber, SubscriberConfig,
};
use tokio::sync::{watch, RwLock};
use uuid::Uuid;

use super::machine_view::{MachineEntry, MachineQuery, MachineView};
use super::view::WorkflowView;
use super::QueryError;
use super::{
    JobQuery, JobStats, JobView, Model, Page, PendingEntry, ProjectionStatus, ReadSide,
    WorkflowQuery, WorkflowStats,
};

/// The consumer's name in status and the API.
pub const NAME: &str = "memory";

/// Events applied per lock acquisition.
const BATCH: usize = 1000;

mod state;

use state::{catch_up_state, State};

/// The embedded read model.
pub struct MemoryReadModel {
    store: Arc<dyn EventStore>,
    state: RwLock<State>,
    rebuilds: super::rebuilds::RebuildTracker,
}

impl MemoryReadModel {
    /// An empty model over `store` (call [`MemoryReadModel::run`] to feed it).
    pub fn new(store: Arc<dyn EventStore>) -> Arc<Self> {
        let p = store.partitions();
        Arc::new(MemoryReadModel {
            state: RwLock::new(State::new(p, Cursor::start(p))),
            store,
            rebuilds: super::rebuilds::RebuildTracker::new(),
        })
    }

    /// Applies what the log holds past the checkpoint; returns the number of events.
    pub async fn catch_up(&self) -> Result<usize, QueryError> {
        let mut total = 0;
        loop {
            let mut state = self.state.write().await;
            let n = catch_up_state(&*self.store, &mut state).await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Feeds the model on the subscriber runtime until `shutdown` turns true (stalls kept
    /// in memory). `serve` builds the subscriber itself, to show it in the status.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        Arc::new(Subscriber::new(
            self,
            store,
            Arc::new(MemoryStatusStore::new()),
            SubscriberConfig {
                batch: BATCH,
                idle_wait: Duration::from_millis(500),
                ..SubscriberConfig::default()
            },
        ))
        .run(shutdown)
        .await;
    }
}

#[async_trait]
impl Handler for MemoryReadModel {
    fn name(&self) -> &str {
        NAME
    }

    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError> {
        Ok(self.state.read().await.checkpoint.after(partition))
    }

    async fn apply(
        &self,
        partition: u32,
        after: LogId,
        events: &[RecordedEvent],
        _fence: Option<u64>,
    ) -> Result<Outcome, HandlerError> {
        let mut state = self.state.write().await;
        if state.checkpoint.after(partition) != after {
            return Ok(Outcome::Moved);
        }
        for e in events {
            state.apply(e).map_err(|message| HandlerError::Failed {
                message: format!("cannot decode the event: {message}"),
                position: Some(e.position.to_string()),
            })?;
        }
        Ok(Outcome::Applied)
    }
}

fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| id(i).to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

fn created_since(t: Option<DateTime<Utc>>, since: Option<DateTime<Utc>>) -> bool {
    match (since, t) {
        (None, _) => true,
        (Some(s), Some(t)) => t >= s,
        (Some(_), None) => false,
    }
}

#[async_trait]
impl ReadSide for MemoryReadModel {
    fn mode(&self) -> &'static str {
        "embedded"
    }

    async fn job(&self, id: Uuid) -> Result<Option<JobView>, QueryError> {
        Ok(self.state.read().await.job_view(id))
    }

    async fn jobs(&self, q: &JobQuery) -> Result<Page<JobView>, QueryError> {
        let state = self.state.read().await;
        let start = q
            .after
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let items: Vec<JobView> = state
            .jobs
            .range((start, std::ops::Bound::Unbounded))
            .filter_map(|(_, (job, times))| JobView::from_state(job, times))
            // List pages come from PostgreSQL in full mode, which keeps no queue times.
            .map(|j| JobView {
                available_at: None,
                lease_expires_at: None,
                ..j
            })
            .filter(|j| q.status.as_deref().is_none_or(|s| s == j.status))
            .filter(|j| q.job_type.as_deref().is_none_or(|t| t == j.job_type))
            .filter(|j| q.workflow_id.is_none_or(|w| Some(w) == j.workflow_id))
            .take(q.limit + 1)
            .collect();
        Ok(page(items, q.limit, |j| j.id))
    }

    async fn job_stats(&self, since: Option<DateTime<Utc>>) -> Result<JobStats, QueryError> {
        let state = self.state.read().await;
        let mut stats = JobStats::default();
        for (job, times) in state.jobs.values() {
            let Some(status) = job.status else { continue };
            if !created_since(times.created_at, since) {
                continue;
            }
            stats.total += 1;
            *stats
                .by_status
                .entry(status.as_str().to_owned())
                .or_default() += 1;
            *stats.by_type.entry(job.job_type.clone()).or_default() += 1;
        }
        Ok(stats)
    }

    async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowView>, QueryError> {
        Ok(self.state.read().await.workflow_view(id, true))
    }

    async fn workflows(&self, q: &WorkflowQuery) -> Result<Page<WorkflowView>, QueryError> {
        let state = self.state.read().await;
        let start = q
            .after
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let items: Vec<WorkflowView> = state
            .workflows
            .range((start, std::ops::Bound::Unbounded))
            .filter_map(|(id, _)| state.workflow_view(*id, false))
            .filter(|w| q.status.as_deref().is_none_or(|s| s == w.status))
            .take(q.limit + 1)
            .collect();
        Ok(page(items, q.limit, |w| w.id))
    }

    async fn workflow_stats(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<WorkflowStats, QueryError> {
        let state = self.state.read().await;
        let mut stats = WorkflowStats::default();
        for w in state.workflows.values() {
            let Some(status) = w.state.status else {
                continue;
            };
            if !created_since(w.created_at, since) {
                continue;
            }
            stats.total += 1;
            *stats
                .by_status
                .entry(status.as_str().to_owned())
                .or_default() += 1;
        }
        Ok(stats)
    }

    async fn machine(&self, id: &str) -> Result<Option<MachineView>, QueryError> {
        Ok(self
            .state
            .read()
            .await
            .machines
            .get(id)
            .and_then(MachineEntry::view))
    }

    async fn machines(&self, q: &MachineQuery) -> Result<Page<MachineView>, QueryError> {
        let state = self.state.read().await;
        let start = q
            .after
            .clone()
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut items: Vec<MachineView> = state
            .machines
            .range((start, std::ops::Bound::Unbounded))
            .filter_map(|(_, m)| m.view())
            .filter(|m| q.status.as_deref().is_none_or(|s| s == m.status))
            .take(q.limit + 1)
            .collect();
        let next_cursor = if items.len() > q.limit {
            items.truncate(q.limit);
            items.last().map(|m| m.machine_id.clone())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn pending(
        &self,
        after: Option<PendingEntry>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>, QueryError> {
        let state = self.state.read().await;
        let start = after.map_or(std::ops::Bound::Unbounded, |a| {
            std::ops::Bound::Excluded((Reverse(a.priority), a.job_id))
        });
        Ok(state
            .pending
            .range((start, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(Reverse(priority), job_id)| PendingEntry {
                priority: *priority,
                job_id: *job_id,
            })
            .collect())
    }

    async fn has_reached(&self, _model: Model, position: Position) -> Result<bool, QueryError> {
        Ok(self.state.read().await.checkpoint.after(position.partition) >= position.id)
    }

    async fn projections(&self) -> Result<Vec<ProjectionStatus>, QueryError> {
        let rebuilding = self.rebuilds.is_running(NAME);
        let state = self.state.read().await;
        let mut out = Vec::new();
        for p in 0..self.store.partitions() {
            let len = self.store.partition_len(p).await?;
            let applied = state.applied.get(p as usize).copied().unwrap_or(0);
            out.push(ProjectionStatus {
                projection: "memory".into(),
                partition: p,
                checkpoint: Position::new(p, state.checkpoint.after(p)).to_string(),
                lag: len.saturating_sub(applied),
                state: if rebuilding { "rebuilding" } else { "running" }.into(),
                last_error: None,
                rebuild: None,
                owner: None,
                lease_expires_at: None,
            });
        }
        Ok(out)
    }

    async fn rebuild(&self, name: &str, from: Offset) -> Result<(), QueryError> {
        if name != "memory" {
            return Err(QueryError::bad_request(
                "name",
                format!("unknown projection {name:?}; embedded mode has one projection: memory"),
            ));
        }
        let start = self.store.resolve(&from).await?;
        let Some(guard) = self.rebuilds.begin(NAME) else {
            return Err(QueryError::bad_request(
                "name",
                "a rebuild of memory is already running",
            ));
        };
        let mut total = 0;
        for p in 0..self.store.partitions() {
            total += self.store.partition_len(p).await?;
        }
        // Build beside the live state, then catch up under the lock and swap: readers
        // see either the old model or the complete new one.
        let mut fresh = State::new(self.store.partitions(), start);
        let mut done = 0;
        loop {
            let n = catch_up_state(&*self.store, &mut fresh).await? as u64;
            done += n;
            guard.progress(done, total.max(done));
            if n == 0 {
                break;
            }
        }
        let mut live = self.state.write().await;
        while catch_up_state(&*self.store, &mut fresh).await? > 0 {}
        *live = fresh;
        Ok(())
    }

    fn rebuilds(&self) -> Vec<(String, super::rebuilds::RebuildStatus)> {
        self.rebuilds.snapshot()
    }

    async fn queue_counts(&self) -> Result<super::QueueCounts, QueryError> {
        let state = self.state.read().await;
        let mut c = super::QueueCounts::default();
        for (job, _) in state.jobs.values() {
            match job.status {
                Some(JobStatus::Pending) => c.pending += 1,
                Some(JobStatus::Assigned | JobStatus::Running) => c.assigned += 1,
                Some(JobStatus::Completed) => c.completed += 1,
                Some(JobStatus::Failed) => c.failed += 1,
                _ => {}
            }
        }
        Ok(c)
    }

    async fn events(
        &self,
        after: Cursor,
        filter: &super::events::EventFilter,
        limit: usize,
    ) -> Result<super::events::EventPage, QueryError> {
        // Embedded: the in-memory log is the archive.
        super::events::page(&*self.store, after, filter, limit, 20_000).await
    }

    async fn health(&self) -> Vec<(&'static str, Result<(), String>)> {
        vec![("store", Ok(()))]
    }
}

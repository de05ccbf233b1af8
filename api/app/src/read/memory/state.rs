//! The embedded model's folded state: jobs, workflows and machines in ordered maps, the
//! pending queue as a sorted set, and the checkpoint; each entity keeps its last applied
//! version, so an event seen twice changes nothing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use jobsource_domain::job::{Job, JobEvent, JobStatus};
use jobsource_domain::machine::MachineEvent;
use jobsource_domain::workflow::{Workflow, WorkflowEvent};
use jobsource_eventstore::typed::from_envelope;
use jobsource_eventstore::{Cursor, EventStore, RecordedEvent};
use uuid::Uuid;

use super::BATCH;
use crate::read::machine_view::MachineEntry;
use crate::read::view::{JobTimes, WorkflowView};
use crate::read::{JobView, QueryError};

#[derive(Default)]
pub(super) struct WorkflowEntry {
    pub(super) state: Workflow,
    pub(super) created_at: Option<DateTime<Utc>>,
    pub(super) updated_at: Option<DateTime<Utc>>,
    pub(super) completed_at: Option<DateTime<Utc>>,
}

pub(super) struct State {
    pub(super) checkpoint: Cursor,
    pub(super) applied: Vec<u64>,
    pub(super) jobs: BTreeMap<Uuid, (Job, JobTimes)>,
    pub(super) workflows: BTreeMap<Uuid, WorkflowEntry>,
    pub(super) pending: BTreeSet<(Reverse<u8>, Uuid)>,
    pub(super) machines: BTreeMap<String, MachineEntry>,
}

impl State {
    pub(super) fn new(partitions: u32, from: Cursor) -> State {
        State {
            checkpoint: from,
            applied: vec![0; partitions as usize],
            jobs: BTreeMap::new(),
            workflows: BTreeMap::new(),
            pending: BTreeSet::new(),
            machines: BTreeMap::new(),
        }
    }

    /// Applies one event; an event that cannot be decoded is refused (the checkpoint stays
    /// before it, so the runtime stalls the partition there instead of skipping it).
    pub(super) fn apply(&mut self, e: &RecordedEvent) -> Result<(), String> {
        let env = &e.envelope;
        if env.stream.starts_with("job-") {
            match from_envelope::<JobEvent>(env) {
                Ok(event) => self.apply_job(&event, env.version, env.occurred_at),
                Err(err) => return Err(err.to_string()),
            }
        } else if env.stream.starts_with("workflow-") {
            match from_envelope::<WorkflowEvent>(env) {
                Ok(event) => {
                    let id = workflow_id(&event);
                    let entry = self.workflows.entry(id).or_default();
                    if env.version > entry.state.version {
                        entry.state.apply(&event);
                        entry.created_at.get_or_insert(env.occurred_at);
                        entry.updated_at = Some(env.occurred_at);
                        if entry.state.is_terminal() {
                            entry.completed_at.get_or_insert(env.occurred_at);
                        }
                    }
                }
                Err(err) => return Err(err.to_string()),
            }
        } else if env.stream.starts_with("machine-") {
            match from_envelope::<MachineEvent>(env) {
                Ok(event) => self
                    .machines
                    .entry(event.machine_id().to_owned())
                    .or_default()
                    .apply(&event, env.version, env.occurred_at),
                Err(err) => return Err(err.to_string()),
            }
        }
        self.checkpoint.advance(e.position);
        if let Some(n) = self.applied.get_mut(e.position.partition as usize) {
            *n += 1;
        }
        Ok(())
    }

    fn apply_job(&mut self, event: &JobEvent, version: u64, at: DateTime<Utc>) {
        let id = event.job_id();
        let (job, times) = self.jobs.entry(id).or_default();
        if version <= job.version {
            return;
        }
        let before = job.status;
        job.apply(event);
        times.apply(event, at);
        let key = (Reverse(job.priority), id);
        if before == Some(JobStatus::Pending) {
            self.pending.remove(&key);
        }
        if job.status == Some(JobStatus::Pending) {
            self.pending.insert(key);
        }
    }

    pub(super) fn job_view(&self, id: Uuid) -> Option<JobView> {
        self.jobs
            .get(&id)
            .and_then(|(job, times)| JobView::from_state(job, times))
    }

    pub(super) fn workflow_view(&self, id: Uuid, with_steps: bool) -> Option<WorkflowView> {
        let w = self.workflows.get(&id)?;
        let mut view = WorkflowView::from_state(
            &w.state,
            w.created_at,
            w.updated_at,
            w.completed_at,
            |job| self.job_view(job),
        )?;
        if !with_steps {
            view.steps.clear();
        }
        Some(view)
    }
}

fn workflow_id(event: &WorkflowEvent) -> Uuid {
    match event {
        WorkflowEvent::WorkflowCreated(c) => c.workflow_id,
        WorkflowEvent::WorkflowStepStarted { workflow_id, .. }
        | WorkflowEvent::WorkflowStepCompleted { workflow_id, .. }
        | WorkflowEvent::WorkflowCompleted { workflow_id, .. }
        | WorkflowEvent::WorkflowStepFailed { workflow_id, .. }
        | WorkflowEvent::WorkflowFailed { workflow_id, .. }
        | WorkflowEvent::WorkflowCancelled { workflow_id, .. } => *workflow_id,
    }
}

pub(super) async fn catch_up_state(
    store: &dyn EventStore,
    state: &mut State,
) -> Result<usize, QueryError> {
    let mut n = 0;
    for p in 0..store.partitions() {
        let batch = store
            .read_partition(p, state.checkpoint.after(p), BATCH)
            .await?;
        n += batch.len();
        for e in &batch {
            state.apply(e).map_err(|message| {
                QueryError::Internal(format!(
                    "cannot apply the event at {}: {message}",
                    e.position
                ))
            })?;
        }
    }
    Ok(n)
}

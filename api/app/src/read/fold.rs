//! Lookups answered from the event store: when the read model has not seen an entity yet
//! (it lags the log by milliseconds), or is behind the position a client asked for, a
//! lookup folds the entity's streams instead. So a lookup never answers 404 for an entity
//! whose creating command has answered.

use std::collections::HashMap;

use jobsource_domain::workflow::{Workflow, WorkflowEvent};
use jobsource_domain::{job_stream, workflow_stream};
use jobsource_eventstore::typed::from_envelope;
use uuid::Uuid;

use super::view::{JobView, WorkflowView};
use jobsource_eventstore::EventStore;

use super::QueryError;

/// Job `id` folded from its stream; `None` when it does not exist.
pub async fn job(store: &dyn EventStore, id: Uuid) -> Result<Option<JobView>, QueryError> {
    let history = store.read_stream_all(&job_stream(id)).await?;
    Ok(JobView::fold(history.iter().map(|e| &e.envelope)))
}

/// Workflow `id` with its steps, folded from its stream and its step jobs' streams.
pub async fn workflow(
    store: &dyn EventStore,
    id: Uuid,
) -> Result<Option<WorkflowView>, QueryError> {
    let history = store.read_stream_all(&workflow_stream(id)).await?;
    let (Some(first), Some(last)) = (history.first(), history.last()) else {
        return Ok(None);
    };
    let mut state = Workflow::default();
    let mut completed_at = None;
    for e in &history {
        let event: WorkflowEvent = from_envelope(&e.envelope)
            .map_err(|d| QueryError::Internal(format!("workflow {id}: {d}")))?;
        state.apply(&event);
        if state.is_terminal() && completed_at.is_none() {
            completed_at = Some(e.envelope.occurred_at);
        }
    }
    let job_ids = state
        .definition
        .as_ref()
        .map(|d| d.job_ids.clone())
        .unwrap_or_default();
    let mut jobs = HashMap::new();
    for job_id in job_ids {
        if let Some(view) = job(store, job_id).await? {
            jobs.insert(job_id, view);
        }
    }
    Ok(WorkflowView::from_state(
        &state,
        Some(first.envelope.occurred_at),
        Some(last.envelope.occurred_at),
        completed_at,
        |job_id| jobs.get(&job_id).cloned(),
    ))
}

//! `/api/workflows`: create, status, cancel and stats, as the seed's `workflow-routes.ts`
//! answered.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use jobsource_domain::job::{CancelJob, JobCommand};
use jobsource_domain::workflow::{CreateWorkflow, StepSpec, WorkflowCommand};
use jobsource_domain::DomainError;
use jobsource_eventstore::{Idempotency, Position};
use uuid::Uuid;

use super::dto::{
    SeedCancelRequest, SeedMessage, SeedStep, SeedTimeframeQuery, SeedWorkflowCreated,
    SeedWorkflowRequest, SeedWorkflowStats, SeedWorkflowStatsResponse, SeedWorkflowStatusResponse,
};
use super::error::{SeedError, SeedErrorBody};
use super::extract::{SeedContext, SeedId, SeedJson, SeedQuery, SeedRequest};
use super::{timeframe, visible, VISIBILITY_WAIT};
use crate::AppState;
use jobsource_app::service::{fingerprint, CommandContext, ServiceError};

/// Create a workflow (seed API). Answers once the workflow and every step's job are
/// readable.
#[utoipa::path(post, path = "/api/workflows", tag = "seed", operation_id = "seed_create_workflow",
    request_body = SeedWorkflowRequest,
    responses((status = 200, body = SeedWorkflowCreated),
        (status = 400, body = SeedErrorBody, description = "WORKFLOW_CREATION_FAILED (message contains \"validation failed\")"),
        (status = 401, body = SeedErrorBody), (status = 413, body = SeedErrorBody),
        (status = 503, body = SeedErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    SeedContext(ctx): SeedContext,
    SeedJson(req): SeedJson<SeedWorkflowRequest>,
) -> Result<Json<SeedWorkflowCreated>, SeedError> {
    let create = CreateWorkflow {
        workflow_id: Uuid::nil(),
        job_ids: Vec::new(),
        name: req.name.unwrap_or_default(),
        description: req.description,
        steps: req
            .steps
            .unwrap_or_default()
            .into_iter()
            .map(|s| StepSpec {
                job_type: s.job_type.unwrap_or_default(),
                prompt: s.prompt,
                parameters: s.parameters,
                depends_on: s.depends_on.unwrap_or_default(),
            })
            .collect(),
        webhook_url: req.webhook_url,
    };
    let outcome = state
        .service()
        .create_workflow(create, &ctx)
        .await
        .map_err(|e| {
            SeedError::from_service(
                e,
                SeedWorkflowRequest::FAILED_CODE,
                SeedWorkflowRequest::SUBJECT,
            )
        })?;
    visible(&state, outcome.position).await;
    let job_ids = outcome
        .state
        .definition
        .as_ref()
        .map(|d| d.job_ids.clone())
        .unwrap_or_default();
    steps_visible(&state, &job_ids).await;
    Ok(Json(SeedWorkflowCreated {
        success: true,
        workflow_id: outcome.state.id,
        job_ids,
    }))
}

/// `POST /api/workflows/create`: the Phase 2 guide's route for the same command.
#[utoipa::path(post, path = "/api/workflows/create", tag = "seed", operation_id = "seed_create_workflow_phase2",
    request_body = SeedWorkflowRequest,
    responses((status = 200, body = SeedWorkflowCreated),
        (status = 400, body = SeedErrorBody, description = "WORKFLOW_CREATION_FAILED"),
        (status = 401, body = SeedErrorBody), (status = 503, body = SeedErrorBody)))]
pub async fn create_phase2(
    state: State<AppState>,
    ctx: SeedContext,
    body: SeedJson<SeedWorkflowRequest>,
) -> Result<Json<SeedWorkflowCreated>, SeedError> {
    create(state, ctx, body).await
}

/// Waits (bounded) until each step job is in the hot model. `create_workflow` submits
/// them before answering but does not return their positions, so this looks them up.
async fn steps_visible(state: &AppState, job_ids: &[Uuid]) {
    let deadline = tokio::time::Instant::now() + VISIBILITY_WAIT;
    for id in job_ids {
        loop {
            match state.read().job(*id).await {
                Ok(Some(_)) => break,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok(None) => {
                    tracing::warn!(job_id = %id, "step job not in the read model in time; answering anyway");
                    return;
                }
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "cannot check the read model; answering anyway");
                    return;
                }
            }
        }
    }
}

/// Workflow status with its steps (seed API).
#[utoipa::path(get, path = "/api/workflows/{id}/status", tag = "seed", operation_id = "seed_workflow_status",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = SeedWorkflowStatusResponse),
        (status = 404, body = SeedErrorBody, description = "WORKFLOW_NOT_FOUND"),
        (status = 401, body = SeedErrorBody), (status = 503, body = SeedErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    id: SeedId,
) -> Result<Json<SeedWorkflowStatusResponse>, SeedError> {
    let uuid = id
        .uuid()
        .ok_or_else(|| SeedError::workflow_not_found(&id.0))?;
    let query = |e| SeedError::from_query(e, "INTERNAL_ERROR", "Query");
    // The read model lags the log: a workflow it has not seen yet is folded from its streams.
    let w = match state.read().workflow(uuid).await.map_err(query)? {
        Some(w) => Some(w),
        None => jobsource_app::read::fold::workflow(state.service().store().as_ref(), uuid)
            .await
            .map_err(query)?,
    }
    .ok_or_else(|| SeedError::workflow_not_found(&id.0))?;
    Ok(Json(SeedWorkflowStatusResponse {
        success: true,
        workflow: (&w).into(),
        steps: w.steps.iter().map(SeedStep::from).collect(),
    }))
}

/// The reason the orchestrator gives the jobs it cancels on `workflow_cancelled`
/// (`orchestrator::react`, `on_workflow_cancelled`). It is part of the idempotency
/// fingerprint below, so it must stay word for word the same.
const CASCADE_REASON: &str = "workflow cancelled";

/// The context of the cancellation of `job_id` caused by the `workflow_cancelled` event
/// `cause`: the same idempotency key and fingerprint the orchestrator's reaction to that
/// event uses (`orch:<event id>:cancel:<job id>`, over key + NUL + reason). Whichever of
/// this request and the orchestrator comes second gets the first one's recorded result,
/// so a job is cancelled once, and both see that it was.
pub(crate) fn cascade_context(ctx: &CommandContext, cause: Uuid, job_id: Uuid) -> CommandContext {
    let key = format!("orch:{cause}:cancel:{job_id}");
    let mut body = Vec::with_capacity(key.len() + 1 + CASCADE_REASON.len());
    body.extend_from_slice(key.as_bytes());
    body.push(0);
    body.extend_from_slice(CASCADE_REASON.as_bytes());
    CommandContext {
        correlation_id: ctx.correlation_id.clone(),
        causation_id: Some(cause.to_string()),
        idempotency: Some(Idempotency::new(key, fingerprint(&body))),
        expected_version: None,
        actor: ctx.actor.clone(),
    }
}

/// Cancels every job of a cancelled workflow that is still waiting or pending, as the
/// orchestrator's cascade would (and under its keys; see [`cascade_context`]). Returns
/// how many were cancelled by this cascade and the positions to wait for.
///
/// Like the seed's `Promise.allSettled`, a job that cannot be cancelled is simply not
/// counted: assigned, running and finished jobs are refused by the domain; a job that
/// fails for another reason (an outage) is logged, and the orchestrator's own cascade
/// retries it.
pub(crate) async fn cancel_step_jobs(
    state: &AppState,
    ctx: &CommandContext,
    cause: Uuid,
    job_ids: &[Uuid],
) -> (usize, Vec<Position>) {
    let results = futures::future::join_all(job_ids.iter().map(|job_id| async move {
        let command = JobCommand::Cancel(CancelJob {
            reason: Some(CASCADE_REASON.to_owned()),
        });
        let ctx = cascade_context(ctx, cause, *job_id);
        (*job_id, state.service().job(*job_id, command, &ctx).await)
    }))
    .await;
    let mut cancelled = 0;
    let mut positions = Vec::new();
    for (job_id, result) in results {
        match result {
            Ok(outcome) => {
                cancelled += 1;
                positions.extend(outcome.position);
            }
            Err(ServiceError::Domain(
                DomainError::InvalidTransition { .. } | DomainError::NotFound { .. },
            )) => {}
            Err(e) => {
                tracing::warn!(%job_id, workflow_cancelled_event = %cause, error = %e,
                    "step job not cancelled here; the orchestrator's cascade will retry");
            }
        }
    }
    (cancelled, positions)
}

/// Cancel a workflow and its jobs that have not started (seed API).
#[utoipa::path(post, path = "/api/workflows/{id}/cancel", tag = "seed", operation_id = "seed_cancel_workflow",
    params(("id" = String, Path, description = "Workflow id")), request_body = Option<SeedCancelRequest>,
    responses((status = 200, body = SeedMessage,
            description = "{success:true, message:\"Workflow cancelled (<n>/<m> jobs cancelled)\"} or {success:false, message:\"Cannot cancel workflow in status: <s>\"}"),
        (status = 404, body = SeedErrorBody, description = "WORKFLOW_NOT_FOUND (with the seed's message \"Workflow not found\")"),
        (status = 400, body = SeedErrorBody), (status = 401, body = SeedErrorBody),
        (status = 503, body = SeedErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    id: SeedId,
    SeedContext(ctx): SeedContext,
    SeedJson(req): SeedJson<SeedCancelRequest>,
) -> Result<Json<SeedMessage>, SeedError> {
    let not_found =
        || SeedError::workflow_not_found(&id.0).with_legacy_message("Workflow not found");
    let uuid = id.uuid().ok_or_else(not_found)?;
    let command = WorkflowCommand::Cancel { reason: req.reason };
    let outcome = match state.service().workflow(uuid, command, &ctx).await {
        Ok(outcome) => outcome,
        Err(ServiceError::Domain(DomainError::InvalidTransition { status, .. })) => {
            return Ok(Json(SeedMessage {
                success: false,
                message: format!("Cannot cancel workflow in status: {status}"),
            }))
        }
        Err(ServiceError::Domain(DomainError::NotFound { .. })) => return Err(not_found()),
        Err(e) => {
            return Err(SeedError::from_service(
                e,
                SeedCancelRequest::FAILED_CODE,
                SeedCancelRequest::SUBJECT,
            ))
        }
    };
    let job_ids = outcome
        .state
        .definition
        .as_ref()
        .map(|d| d.job_ids.clone())
        .unwrap_or_default();
    // The command appends exactly one event, `workflow_cancelled`: the cause of the
    // cascade. Without it (impossible today) the orchestrator's cascade does the work.
    let (cancelled, positions) = match outcome.event_ids.first() {
        Some(cause) => cancel_step_jobs(&state, &ctx, *cause, &job_ids).await,
        None => (0, Vec::new()),
    };
    for position in outcome.position.into_iter().chain(positions) {
        visible(&state, Some(position)).await;
    }
    Ok(Json(SeedMessage {
        success: true,
        message: format!(
            "Workflow cancelled ({cancelled}/{} jobs cancelled)",
            job_ids.len()
        ),
    }))
}

/// Workflow statistics (seed API).
#[utoipa::path(get, path = "/api/workflows/stats", tag = "seed", operation_id = "seed_workflow_stats",
    params(("timeframe" = Option<String>, Query, description = "hour, day (default) or week")),
    responses((status = 200, body = SeedWorkflowStatsResponse),
        (status = 400, body = SeedErrorBody, description = "INVALID_TIMEFRAME"),
        (status = 401, body = SeedErrorBody), (status = 503, body = SeedErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    SeedQuery(q): SeedQuery<SeedTimeframeQuery>,
) -> Result<Json<SeedWorkflowStatsResponse>, SeedError> {
    let (tf, _) = timeframe(q.timeframe.as_deref())?;
    // Like the seed (`KEYS workflow:*`): every workflow, whatever the timeframe.
    let stats = state
        .read()
        .workflow_stats(None)
        .await
        .map_err(|e| SeedError::from_query(e, "INTERNAL_ERROR", "Query"))?;
    let n = |s: &str| stats.by_status.get(s).copied().unwrap_or(0);
    Ok(Json(SeedWorkflowStatsResponse {
        success: true,
        stats: SeedWorkflowStats {
            total: stats.total,
            pending: n("pending"),
            running: n("running"),
            completed: n("completed"),
            failed: n("failed"),
            cancelled: n("cancelled"),
        },
        timeframe: tf.to_owned(),
    }))
}

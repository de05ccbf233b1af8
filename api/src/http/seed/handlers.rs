//! The `/api` handlers: parse the seed's bodies, run the shared commands and queries,
//! answer in the seed's shapes.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jobsource_domain::job::{
    CancelJob, CompleteJob, JobCommand, ReportProgress, Requirements, SubmitJob,
};
use jobsource_domain::workflow::{CreateWorkflow, StepSpec, WorkflowCommand, WorkflowStatus};
use jobsource_domain::DomainError;
use jobsource_eventstore::Position;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ok, SeedError, VISIBILITY_WAIT};
use crate::http::AppState;
use crate::read::{wait_for, JobView, Model};
use crate::service::{CommandContext, ServiceError};

fn context(headers: &HeaderMap) -> CommandContext {
    let correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    CommandContext {
        correlation_id,
        actor: Some("api-seed".into()),
        ..CommandContext::default()
    }
}

/// Parses a seed body; an empty body is `{}`.
fn body<T: serde::de::DeserializeOwned>(
    raw: &Bytes,
    failed_code: &'static str,
) -> Result<T, SeedError> {
    let raw: &[u8] = if raw.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        raw
    };
    serde_json::from_slice(raw).map_err(|e| {
        let message = format!("validation failed: invalid request body: {e}");
        if failed_code == "MALFORMED_REQUEST" {
            SeedError::malformed(message)
        } else {
            SeedError::new(StatusCode::BAD_REQUEST, failed_code, message)
        }
    })
}

/// Waits (bounded) until the `redis` read model has applied `position`.
async fn visible(state: &AppState, position: Option<Position>) {
    let Some(p) = position else { return };
    match wait_for(&**state.read(), Model::Hot, p, VISIBILITY_WAIT).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(position = %p, "read model did not reach the command's position in time; answering anyway")
        }
        Err(e) => {
            tracing::warn!(position = %p, error = %e, "cannot check the read model; answering anyway")
        }
    }
}

fn parse_id(id: &str) -> Option<Uuid> {
    Uuid::parse_str(id).ok()
}

/// `POST /api/jobs/submit` body (the seed's `JobSubmissionRequest`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedSubmit {
    /// Job type.
    #[serde(rename = "type", default)]
    pub job_type: Option<String>,
    /// Prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Parameters.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// 0..=100 (default 50).
    #[serde(default)]
    pub priority: Option<i64>,
    /// Webhook target.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Requirements.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub requirements: Option<Value>,
    /// Jobs to wait for.
    #[serde(default)]
    pub depends_on: Option<Vec<Uuid>>,
    /// Retry budget.
    #[serde(default)]
    pub max_retries: Option<i64>,
}

/// Submit a job (seed API).
#[utoipa::path(post, path = "/api/jobs/submit", tag = "seed", request_body = SeedSubmit,
    responses((status = 200, description = "{success:true, job_id, status:\"submitted\"|\"waiting\"}"),
        (status = 400, body = super::SeedErrorBody, description = "JOB_SUBMISSION_FAILED")))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, SeedError> {
    const CODE: &str = "JOB_SUBMISSION_FAILED";
    let req: SeedSubmit = body(&raw, CODE)?;
    let mut errors = Vec::new();
    let range = |field: &str, v: Option<i64>, errors: &mut Vec<String>| match v {
        Some(n) if !(0..=100).contains(&n) => {
            errors.push(format!("{field}: must be between 0 and 100"));
            None
        }
        other => other,
    };
    let priority = range("priority", req.priority, &mut errors);
    let max_retries = range("max_retries", req.max_retries, &mut errors);
    let requirements = match req.requirements {
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value::<Requirements>(v) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(format!("requirements: {e}"));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(SeedError::new(
            StatusCode::BAD_REQUEST,
            CODE,
            format!("validation failed: {}", errors.join("; ")),
        ));
    }
    let defaults = SubmitJob::default();
    let submit = SubmitJob {
        job_type: req.job_type.unwrap_or_default(),
        prompt: req.prompt,
        parameters: req.parameters.unwrap_or_default(),
        priority: priority.map_or(defaults.priority, |p| p as u8),
        requirements,
        webhook_url: req.webhook_url,
        depends_on: req.depends_on.unwrap_or_default(),
        max_retries: max_retries.map_or(defaults.max_retries, |m| m as u32),
        ..defaults
    };
    let outcome = state
        .service()
        .submit_job(submit, &context(&headers))
        .await
        .map_err(|e| SeedError::from_service(e, CODE, ""))?;
    visible(&state, outcome.position).await;
    let waiting = outcome.state.status == Some(jobsource_domain::job::JobStatus::Waiting);
    Ok(ok(json!({
        "job_id": outcome.state.id,
        "status": if waiting { "waiting" } else { "submitted" },
    })))
}

/// The seed's job object: absent fields omitted, as its `undefined` were.
fn seed_job(j: &JobView) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(j.id));
    m.insert("type".into(), json!(j.job_type));
    m.insert("status".into(), json!(j.status));
    m.insert("progress".into(), json!(j.progress));
    let optional = [
        ("created_at", j.created_at.clone().map(Value::from)),
        ("started_at", j.started_at.clone().map(Value::from)),
        ("completed_at", j.completed_at.clone().map(Value::from)),
        ("result", j.result.clone()),
        ("error", j.error.clone()),
        ("worker_id", j.worker_id.clone().map(Value::from)),
        ("machine_id", j.machine_id.clone().map(Value::from)),
        (
            "workflow_id",
            j.workflow_id.map(|w| Value::from(w.to_string())),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    }
    Value::Object(m)
}

/// Job status (seed API).
#[utoipa::path(get, path = "/api/jobs/{id}/status", tag = "seed", params(("id" = String, Path)),
    responses((status = 200, description = "{success:true, job:{id,type,status,progress,created_at,started_at,completed_at,result,error,worker_id,machine_id,workflow_id}}"),
        (status = 404, body = super::SeedErrorBody, description = "JOB_NOT_FOUND")))]
pub async fn job_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, SeedError> {
    let uuid = parse_id(&id).ok_or_else(|| SeedError::job_not_found(&id))?;
    let job = state
        .read()
        .job(uuid)
        .await
        .map_err(|e| SeedError::from_service(e, "INTERNAL_ERROR", &id))?
        .ok_or_else(|| SeedError::job_not_found(&id))?;
    Ok(ok(json!({"job": seed_job(&job)})))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
/// `{reason}`.
pub struct SeedReason {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cancels one job: `Ok(Ok(position))` cancelled, `Ok(Err(status))` not cancellable in
/// its status.
async fn cancel_one(
    state: &AppState,
    id: Uuid,
    reason: Option<String>,
    ctx: &CommandContext,
) -> Result<Result<Option<Position>, String>, ServiceError> {
    match state
        .service()
        .job(id, JobCommand::Cancel(CancelJob { reason }), ctx)
        .await
    {
        Ok(o) => Ok(Ok(o.position)),
        Err(ServiceError::Domain(DomainError::InvalidTransition { status, .. })) => Ok(Err(status)),
        Err(e) => Err(e),
    }
}

/// Cancel a job (seed API).
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "seed", params(("id" = String, Path)), request_body = SeedReason,
    responses((status = 200, description = "{success:true, message:\"Job cancelled successfully\"} or {success:false, message:\"Cannot cancel job in status: <s>\"}"),
        (status = 404, body = super::SeedErrorBody, description = "JOB_NOT_FOUND")))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, SeedError> {
    let req: SeedReason = body(&raw, "MALFORMED_REQUEST")?;
    let not_found = || {
        let mut e = SeedError::job_not_found(&id);
        e.legacy_message = Some("Job not found".into());
        e
    };
    let uuid = parse_id(&id).ok_or_else(not_found)?;
    match cancel_one(&state, uuid, req.reason, &context(&headers)).await {
        Ok(Ok(position)) => {
            visible(&state, position).await;
            Ok(ok(json!({"message": "Job cancelled successfully"})))
        }
        Ok(Err(status)) => Ok(axum::Json(json!({
            "success": false,
            "message": format!("Cannot cancel job in status: {status}"),
        }))
        .into_response()),
        Err(ServiceError::Domain(DomainError::NotFound { .. })) => Err(not_found()),
        Err(e) => Err(SeedError::from_service(e, "INTERNAL_ERROR", &id)),
    }
}

/// `timeframe` query.
#[derive(Debug, Default, Deserialize)]
pub struct Timeframe {
    /// `hour`, `day` (default) or `week`.
    pub timeframe: Option<String>,
}

fn timeframe(q: &Timeframe) -> Result<(String, chrono::DateTime<chrono::Utc>), SeedError> {
    let tf = q.timeframe.clone().unwrap_or_else(|| "day".into());
    let span = match tf.as_str() {
        "hour" => chrono::Duration::hours(1),
        "day" => chrono::Duration::days(1),
        "week" => chrono::Duration::weeks(1),
        _ => {
            return Err(SeedError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_TIMEFRAME",
                "Timeframe must be hour, day, or week",
            ))
        }
    };
    Ok((tf, chrono::Utc::now() - span))
}

/// Job statistics (seed API).
#[utoipa::path(get, path = "/api/jobs/stats", tag = "seed", params(("timeframe" = Option<String>, Query)),
    responses((status = 200, description = "{success:true, stats:{total,pending,running,completed,failed,by_type}, timeframe}"),
        (status = 400, body = super::SeedErrorBody, description = "INVALID_TIMEFRAME")))]
pub async fn job_stats(
    State(state): State<AppState>,
    Query(q): Query<Timeframe>,
) -> Result<Response, SeedError> {
    let (tf, since) = timeframe(&q)?;
    let fail = |e| SeedError::from_service(e, "INTERNAL_ERROR", "");
    let counts = state.read().queue_counts().await.map_err(fail)?;
    let by_type = state
        .read()
        .job_stats(Some(since))
        .await
        .map_err(fail)?
        .by_type;
    Ok(ok(json!({
        "stats": {
            "total": counts.pending + counts.assigned + counts.completed + counts.failed,
            "pending": counts.pending,
            "running": counts.assigned,
            "completed": counts.completed,
            "failed": counts.failed,
            "by_type": by_type,
        },
        "timeframe": tf,
    })))
}

/// One step of a seed workflow request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedStep {
    /// Job type.
    #[serde(rename = "type", default)]
    pub job_type: Option<String>,
    /// Prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Parameters.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Earlier steps it waits for.
    #[serde(default)]
    pub depends_on: Option<Vec<u32>>,
}

/// `POST /api/workflows` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedWorkflow {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Steps.
    #[serde(default)]
    pub steps: Option<Vec<SeedStep>>,
    /// Webhook target.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// Create a workflow (seed API): answers once the workflow and its step jobs are readable.
#[utoipa::path(post, path = "/api/workflows", tag = "seed", request_body = SeedWorkflow,
    responses((status = 200, description = "{success:true, workflow_id, job_ids}"),
        (status = 400, body = super::SeedErrorBody, description = "WORKFLOW_CREATION_FAILED")))]
pub async fn create_workflow(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, SeedError> {
    const CODE: &str = "WORKFLOW_CREATION_FAILED";
    let req: SeedWorkflow = body(&raw, CODE)?;
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
        .create_workflow(create, &context(&headers))
        .await
        .map_err(|e| SeedError::from_service(e, CODE, ""))?;
    visible(&state, outcome.position).await;
    let job_ids = outcome
        .state
        .definition
        .as_ref()
        .map(|d| d.job_ids.clone())
        .unwrap_or_default();
    // The step jobs live in other partitions: wait until each is readable too.
    let deadline = tokio::time::Instant::now() + VISIBILITY_WAIT;
    for id in &job_ids {
        while matches!(state.read().job(*id).await, Ok(None))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    Ok(ok(
        json!({"workflow_id": outcome.state.id, "job_ids": job_ids}),
    ))
}

/// Workflow status with steps (seed API).
#[utoipa::path(get, path = "/api/workflows/{id}/status", tag = "seed", params(("id" = String, Path)),
    responses((status = 200, description = "{success:true, workflow:{...}, steps:[...]}"),
        (status = 404, body = super::SeedErrorBody, description = "WORKFLOW_NOT_FOUND")))]
pub async fn workflow_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, SeedError> {
    let uuid = parse_id(&id).ok_or_else(|| SeedError::workflow_not_found(&id))?;
    let w = state
        .read()
        .workflow(uuid)
        .await
        .map_err(|e| SeedError::from_service(e, "INTERNAL_ERROR", &id))?
        .ok_or_else(|| SeedError::workflow_not_found(&id))?;
    let pct = if w.total_steps > 0 {
        (f64::from(w.completed_steps) / f64::from(w.total_steps) * 10_000.0).round() / 100.0
    } else {
        0.0
    };
    let mut workflow = json!({
        "id": w.id, "name": w.name, "status": w.status, "total_steps": w.total_steps,
        "completed_steps": w.completed_steps, "progress_percentage": pct,
    });
    if let Some(m) = workflow.as_object_mut() {
        for (k, v) in [
            ("description", w.description.clone()),
            ("created_at", w.created_at.clone()),
            ("completed_at", w.completed_at.clone()),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v));
            }
        }
    }
    let steps: Vec<Value> = w
        .steps
        .iter()
        .map(|s| {
            let mut m = json!({"step_index": s.step_index, "job_id": s.job_id, "status": s.status, "progress": s.progress});
            if let Some(o) = m.as_object_mut() {
                for (k, v) in [("result", s.result.clone()), ("error", s.error.clone()),
                    ("started_at", s.started_at.clone().map(Value::from)), ("completed_at", s.completed_at.clone().map(Value::from))] {
                    if let Some(v) = v {
                        o.insert(k.into(), v);
                    }
                }
            }
            m
        })
        .collect();
    Ok(ok(json!({"workflow": workflow, "steps": steps})))
}

/// Cancel a workflow and its cancellable jobs (seed API).
#[utoipa::path(post, path = "/api/workflows/{id}/cancel", tag = "seed", params(("id" = String, Path)), request_body = SeedReason,
    responses((status = 200, description = "{success:true, message:\"Workflow cancelled (<n>/<m> jobs cancelled)\"}"),
        (status = 404, body = super::SeedErrorBody, description = "WORKFLOW_NOT_FOUND")))]
pub async fn cancel_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, SeedError> {
    let req: SeedReason = body(&raw, "MALFORMED_REQUEST")?;
    let not_found = || {
        let mut e = SeedError::workflow_not_found(&id);
        e.legacy_message = Some("Workflow not found".into());
        e
    };
    let uuid = parse_id(&id).ok_or_else(not_found)?;
    let fail = |e| SeedError::from_service(e, "INTERNAL_ERROR", &id);
    let wf = state.service().load_workflow(uuid).await.map_err(fail)?;
    let (Some(status), Some(def)) = (wf.status, wf.definition.as_ref()) else {
        return Err(not_found());
    };
    if matches!(
        status,
        WorkflowStatus::Completed | WorkflowStatus::Failed | WorkflowStatus::Cancelled
    ) {
        return Ok(axum::Json(json!({
            "success": false,
            "message": format!("Cannot cancel workflow in status: {status}"),
        }))
        .into_response());
    }
    let ctx = context(&headers);
    // Like the seed: cancel the jobs first and count them, then the workflow (its cascade
    // in the orchestrator then finds nothing left to cancel, so the count is this call's).
    let mut cancelled = 0;
    for job in &def.job_ids {
        if let Ok(Ok(position)) = cancel_one(&state, *job, req.reason.clone(), &ctx).await {
            cancelled += 1;
            visible(&state, position).await;
        }
    }
    let outcome = state
        .service()
        .workflow(
            uuid,
            WorkflowCommand::Cancel {
                reason: req.reason.clone(),
            },
            &ctx,
        )
        .await
        .map_err(fail)?;
    visible(&state, outcome.position).await;
    Ok(ok(json!({
        "message": format!("Workflow cancelled ({cancelled}/{} jobs cancelled)", def.job_ids.len()),
    })))
}

/// Workflow statistics (seed API).
#[utoipa::path(get, path = "/api/workflows/stats", tag = "seed", params(("timeframe" = Option<String>, Query)),
    responses((status = 200, description = "{success:true, stats:{total,pending,running,completed,failed,cancelled}, timeframe}"),
        (status = 400, body = super::SeedErrorBody, description = "INVALID_TIMEFRAME")))]
pub async fn workflow_stats(
    State(state): State<AppState>,
    Query(q): Query<Timeframe>,
) -> Result<Response, SeedError> {
    let (tf, _) = timeframe(&q)?;
    // Like the seed: every workflow counted (the timeframe is validated and echoed).
    let stats = state
        .read()
        .workflow_stats(None)
        .await
        .map_err(|e| SeedError::from_service(e, "INTERNAL_ERROR", ""))?;
    let n = |s: &str| stats.by_status.get(s).copied().unwrap_or(0);
    Ok(ok(json!({
        "stats": {
            "total": stats.total, "pending": n("pending"), "running": n("running"),
            "completed": n("completed"), "failed": n("failed"), "cancelled": n("cancelled"),
        },
        "timeframe": tf,
    })))
}

/// `POST /api/internal/jobs/{id}/progress` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedProgress {
    /// 0..=100.
    #[serde(default)]
    pub progress: Option<f64>,
    /// Stage.
    #[serde(default)]
    pub stage: Option<String>,
    /// Message.
    #[serde(default)]
    pub message: Option<String>,
}

/// Worker progress report (seed internal API).
#[utoipa::path(post, path = "/api/internal/jobs/{id}/progress", tag = "seed", params(("id" = String, Path)), request_body = SeedProgress,
    responses((status = 200, description = "{success:true}"), (status = 404, body = super::SeedErrorBody), (status = 409, body = super::SeedErrorBody)))]
pub async fn internal_progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, SeedError> {
    let req: SeedProgress = body(&raw, "MALFORMED_REQUEST")?;
    let uuid = parse_id(&id).ok_or_else(|| SeedError::job_not_found(&id))?;
    let progress = req.progress.unwrap_or(0.0);
    if !(0.0..=100.0).contains(&progress) {
        return Err(SeedError::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
            "validation failed: progress: must be between 0 and 100",
        ));
    }
    let cmd = JobCommand::ReportProgress(ReportProgress {
        progress: progress.round() as u8,
        stage: req.stage,
        message: req.message,
    });
    let outcome = state
        .service()
        .job(uuid, cmd, &context(&headers))
        .await
        .map_err(|e| SeedError::from_service(e, "VALIDATION_FAILED", &id))?;
    visible(&state, outcome.position).await;
    Ok(ok(json!({})))
}

/// `POST /api/internal/jobs/{id}/complete` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedComplete {
    /// Result.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub result: Value,
    /// Run time in ms.
    #[serde(default)]
    pub duration: Option<u64>,
}

/// Worker completion report (seed internal API).
#[utoipa::path(post, path = "/api/internal/jobs/{id}/complete", tag = "seed", params(("id" = String, Path)), request_body = SeedComplete,
    responses((status = 200, description = "{success:true}"), (status = 404, body = super::SeedErrorBody), (status = 409, body = super::SeedErrorBody)))]
pub async fn internal_complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, SeedError> {
    let req: SeedComplete = body(&raw, "MALFORMED_REQUEST")?;
    let uuid = parse_id(&id).ok_or_else(|| SeedError::job_not_found(&id))?;
    let cmd = JobCommand::Complete(CompleteJob {
        result: req.result,
        duration_ms: req.duration,
    });
    let outcome = state
        .service()
        .job(uuid, cmd, &context(&headers))
        .await
        .map_err(|e| SeedError::from_service(e, "VALIDATION_FAILED", &id))?;
    visible(&state, outcome.position).await;
    Ok(ok(json!({})))
}

//! The OpenAPI document served at `/openapi.json` (bring your own viewer).

pub mod precision;

use axum::extract::State;
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail, FieldDetail};
use super::health::Health;
use super::schema::{
    AttemptView, Delivery, JobStats, JobView, MachineView, Page, ProjectionStatus, StepView,
    WorkerView, WorkflowStats, WorkflowView,
};
use super::seed;
use super::v1::{admin, dto, events, jobs, machine_dto, machines, webhooks, workers, workflows};
use super::AppState;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "jobsource", description = "Event-sourced job and workflow core. When JOBSOURCE_API_KEYS is set, /v1 and /api routes need `Authorization: Bearer <key>` or `X-API-Key`."),
    paths(
        jobs::submit, jobs::assign, jobs::progress, jobs::complete, jobs::fail, jobs::cancel,
        jobs::heartbeat,
        jobs::get, jobs::list, jobs::stats, jobs::events,
        workers::claim,
        machines::register, machines::heartbeat, machines::get, machines::list, machines::events,
        workflows::create, workflows::cancel, workflows::get, workflows::list, workflows::stats,
        workflows::events,
        events::page,
        admin::projections, admin::rebuild, admin::resume,
        webhooks::list, webhooks::get, webhooks::retry,
        super::health::health, super::health::ready,
        seed::jobs::submit, seed::jobs::status, seed::jobs::cancel, seed::jobs::stats,
        seed::workflows::create, seed::workflows::create_phase2, seed::workflows::status,
        seed::workflows::cancel, seed::workflows::stats,
        seed::internal::progress, seed::internal::complete,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, FieldDetail, Health,
        seed::SeedErrorBody, seed::SeedErrorDetail, seed::dto::SeedSubmitRequest,
        seed::dto::SeedCancelRequest, seed::dto::SeedStepRequest, seed::dto::SeedWorkflowRequest,
        seed::dto::SeedProgressRequest, seed::dto::SeedCompleteRequest, seed::dto::SeedOk,
        seed::dto::SeedMessage, seed::dto::SeedSubmitResponse, seed::dto::SeedJob,
        seed::dto::SeedJobStatusResponse, seed::dto::SeedJobStats, seed::dto::SeedJobStatsResponse,
        seed::dto::SeedWorkflowCreated, seed::dto::SeedWorkflow, seed::dto::SeedStep,
        seed::dto::SeedWorkflowStatusResponse, seed::dto::SeedWorkflowStats,
        seed::dto::SeedWorkflowStatsResponse,
        JobView, StepView, WorkflowView, JobStats, WorkflowStats, ProjectionStatus,
        Page<JobView>, Page<WorkflowView>,
        dto::SubmitJobRequest, dto::RequirementsBody, dto::AssignRequest, dto::ProgressRequest,
        dto::CompleteRequest, dto::FailRequest, dto::JobErrorBody, dto::CancelRequest,
        dto::ClaimRequest, dto::StepRequest, dto::CreateWorkflowRequest,
        dto::JobHeartbeatRequest, dto::JobHeartbeatResponse,
        dto::JobCommandResponse, dto::WorkflowCommandResponse, dto::ClaimResponse,
        dto::EventView, dto::StreamEvents, dto::EventPageResponse, dto::RebuildRequest,
        dto::RebuildResponse, dto::ResumeResponse, dto::ProjectionsResponse,
        crate::schema::RebuildStatus,
        Delivery, AttemptView, Page<Delivery>,
        MachineView, WorkerView, Page<MachineView>,
        machine_dto::RegisterMachineRequest, machine_dto::WorkerReportBody,
        machine_dto::HeartbeatRequest, machine_dto::MachineCommandResponse,
        machine_dto::HeartbeatResponse,
    )),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "jobs", description = "Submit, drive and read jobs"),
        (name = "workflows", description = "Multi-step workflows"),
        (name = "workers", description = "Worker claims"),
        (name = "machines", description = "Machine registry: registration, heartbeats, timeouts"),
        (name = "audit", description = "Audit and replay"),
        (name = "projections", description = "Read models"),
        (name = "webhooks", description = "Webhook deliveries"),
        (name = "health", description = "Health"),
        (name = "seed", description = "The seed system's API (/api), for its existing clients"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`: the document, made as precise as this server's handlers and
/// settings (see [`precision`]).
pub async fn document(State(state): State<AppState>) -> Json<serde_json::Value> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let (consumers, rebuildable) = match state.consumers() {
        Some(c) => (
            c.names(),
            c.owned().into_iter().map(|(name, _)| name).collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let rebuildable = if rebuildable.is_empty() {
        // Embedded mode: the in-memory model (rebuilt by the read side itself).
        vec![jobsource_app::read::memory::NAME.to_owned()]
    } else {
        rebuildable
    };
    precision::apply(
        &mut doc,
        &precision::Context {
            keys: !state.config().api_keys.is_empty(),
            consumers,
            rebuildable,
            partitions: state.service().store().partitions(),
        },
    );
    Json(doc)
}

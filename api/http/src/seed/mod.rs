//! The seed system's API (`/api`, SPEC section 6.2): the routes, request bodies, response
//! shapes, status codes and error codes its Phase 2 and Phase 3 guides give their
//! clients, so an existing client works unchanged.
//!
//! ```text
//! POST /api/jobs/submit                  200 {success, job_id, status: submitted|waiting}
//! GET  /api/jobs/{id}/status             200 {success, job:{id,type,status,progress,created_at,started_at,
//!                                         completed_at,result,error,worker_id,machine_id,workflow_id}}
//! POST /api/jobs/{id}/cancel {reason}    200 {success:true,  message:"Job cancelled successfully"}
//!                                          | {success:false, message:"Cannot cancel job in status: <s>"}
//! GET  /api/jobs/stats?timeframe=        200 {success, stats:{total,pending,running,completed,failed,by_type}, timeframe}
//! POST /api/workflows                    200 {success, workflow_id, job_ids}   (also /api/workflows/create)
//! GET  /api/workflows/{id}/status        200 {success, workflow:{...}, steps:[...]}
//! POST /api/workflows/{id}/cancel        200 {success, message:"Workflow cancelled (<n>/<m> jobs cancelled)"}
//! GET  /api/workflows/stats?timeframe=   200 {success, stats:{total,pending,running,completed,failed,cancelled}, timeframe}
//! POST /api/internal/jobs/{id}/progress  200 {success:true}
//! POST /api/internal/jobs/{id}/complete  200 {success:true}
//! errors                                 {success:false, error:{code, message}}
//! ```
//!
//! Every handler translates to the command layer ([`jobsource_app::service::Service`]) and read
//! side ([`jobsource_app::read::ReadSide`]) that `/v1` uses; there is no second command path.
//! What this surface adds, because the seed's clients rely on it:
//!
//! - **Read-your-writes.** A command answers only once the `redis` read model has applied
//!   its events ([`jobsource_app::read::wait_for`] on [`Model::Hot`], at most [`VISIBILITY_WAIT`];
//!   after that it answers anyway and logs a warning). Creating a workflow also waits for
//!   every step job, and cancelling one for every job it cancelled.
//! - **The seed's errors.** Bodies the route cannot use are 400 with the route's code
//!   (`JOB_SUBMISSION_FAILED`, `WORKFLOW_CREATION_FAILED`) and the seed's message form
//!   `"<Job|Workflow> validation failed: <field>: <problem>, ..."`; this covers malformed
//!   JSON and wrong types too (never axum's plain-text rejections). Unknown ids are 404
//!   `JOB_NOT_FOUND` / `WORKFLOW_NOT_FOUND`; missing or wrong `x-api-key` is 401
//!   `UNAUTHORIZED`; an unknown `/api` route is the seed's 404 `NOT_FOUND`
//!   (`Endpoint <METHOD> <path> not found`). Conflicts, outages (503) and internal faults
//!   (500 `INTERNAL_ERROR`, detail only in the log) keep the `/v1` status and code.
//!
//! Choices where the seed is ambiguous, inconsistent, or differs from the SPEC (which wins):
//!
//! - **Absent values are `null`.** The Phase 3 service returned `undefined` for unset
//!   fields (so JSON omitted them) while the Phase 2 routes sent `null` for `result` and
//!   `error`. Every listed field is always present here, `null` when unset, so a client
//!   of either phase finds the keys it reads and `== null` / truthiness checks behave as
//!   before.
//! - **Statuses** are the seed hash's (`waiting|pending|assigned|running|completed|failed|
//!   cancelled`); only the submit answer says `submitted` for a queued job, as the seed's.
//! - **Job stats** are the seed's Redis counts: `pending` = ZCARD `jobs:pending`, `running`
//!   = SCARD `jobs:assigned` (assigned and running jobs), `completed` and `failed` the
//!   sets, `total` their sum (so waiting and cancelled jobs are in no count, as in the
//!   seed). Like the seed's, they ignore `timeframe`, which is validated and echoed.
//!   `by_type` (always `{}` in the seed) counts jobs of every status created within the
//!   timeframe, from the PostgreSQL list model, which follows the log by milliseconds.
//! - **Workflow stats** count every workflow whatever the timeframe (the seed's `KEYS
//!   workflow:*`), from the list model.
//! - **Timeframe**: absent or empty is `day` (the seed's `timeframe || 'day'`); anything
//!   but `hour|day|week` is 400 `INVALID_TIMEFRAME`.
//! - **Not found on cancel**: the seed answered 200 `{success:false, message:"Job not
//!   found"}`; the SPEC says 404, so it is a 404 `JOB_NOT_FOUND` (`WORKFLOW_NOT_FOUND`)
//!   whose body also carries the seed's top-level `message`. An id that is not a UUID
//!   names nothing and is not found (the seed's tests use `nonexistent-job`).
//! - **Workflow cancel** cancels the workflow first (a terminal one answers 200
//!   `{success:false, message:"Cannot cancel workflow in status: <s>"}`), then each step
//!   job still waiting or pending, counting those it cancelled, with the very idempotency
//!   keys the orchestrator's cascade uses (see [`workflows::cascade_context`]), so the
//!   two never cancel a job twice and the count is right whichever comes first. Those
//!   jobs carry the orchestrator's reason (`workflow cancelled`); the client's reason is
//!   on the `workflow_cancelled` event. A job that cannot be cancelled (started,
//!   finished, or a transient failure) is not counted, like the seed's `allSettled`.
//! - **Submit body**: `type`, `prompt`, `parameters`, `priority` (the seed's fields), and
//!   also `requirements`, `depends_on` (job ids; the job then starts `waiting`) and
//!   `max_retries` from the SPEC's `SubmitJob`. `priority: 0` stays 0 (the seed's `||`
//!   turned it into 50). The seed's `model_type` inside `requirements` is ignored, and
//!   `workflow_id` is not accepted from clients (step jobs belong to their workflow
//!   only). Job types and required fields follow the catalog when one is configured.
//! - **Workflow body**: `name`, `description`, `steps[] {type, prompt, parameters,
//!   depends_on: [earlier step indices]}`, `webhook_url`.
//! - **Routes**: Phase 3's `POST /api/workflows`, plus Phase 2's `POST
//!   /api/workflows/create` for the same command. The internal routes (Phase 2) accept
//!   the workers' `worker_id` / `machine_id` without checking them (the assignment is
//!   authoritative); a job that is not assigned or running is 409 `INVALID_TRANSITION`,
//!   a missing or out-of-range `progress` 400 `VALIDATION_FAILED`.
//! - **Headers**: `x-api-key` (or `Authorization: Bearer`) when keys are configured;
//!   `X-Correlation-Id` is read, echoed and stored as on `/v1`. `Idempotency-Key` and
//!   `If-Match` are `/v1` features the seed's clients never sent; they are ignored here.

pub mod dto;
pub mod error;
pub mod extract;
pub mod internal;
pub mod jobs;
pub mod workflows;

#[cfg(test)]
mod tests;

use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use jobsource_eventstore::Position;

use super::AppState;
use jobsource_app::read::{wait_for, Model};

pub use error::{unauthorized, SeedError, SeedErrorBody, SeedErrorDetail};

/// Longest wait for the `redis` read model after a command before answering anyway.
pub const VISIBILITY_WAIT: Duration = Duration::from_secs(2);

/// The `/api` routes (mounted under `/api`, behind the API-key middleware).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs/submit", post(jobs::submit))
        .route("/jobs/stats", get(jobs::stats))
        .route("/jobs/{id}/status", get(jobs::status))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/workflows", post(workflows::create))
        .route("/workflows/create", post(workflows::create_phase2))
        .route("/workflows/stats", get(workflows::stats))
        .route("/workflows/{id}/status", get(workflows::status))
        .route("/workflows/{id}/cancel", post(workflows::cancel))
        .route("/internal/jobs/{id}/progress", post(internal::progress))
        .route("/internal/jobs/{id}/complete", post(internal::complete))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::no_route)
}

/// Waits (bounded by [`VISIBILITY_WAIT`]) until the `redis` read model has applied
/// `position`; never fails the request (the command did happen).
pub(crate) async fn visible(state: &AppState, position: Option<Position>) {
    let Some(p) = position else { return };
    match wait_for(&**state.read(), Model::Hot, p, VISIBILITY_WAIT).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(position = %p, wait = ?VISIBILITY_WAIT,
            "read model did not reach the command's position in time; answering anyway"),
        Err(e) => tracing::warn!(position = %p, error = %e,
            "cannot check the read model; answering anyway"),
    }
}

/// The validated timeframe and its start: absent or empty is `day`, as in the seed.
pub(crate) fn timeframe(tf: Option<&str>) -> Result<(&str, DateTime<Utc>), SeedError> {
    let tf = tf.filter(|t| !t.is_empty()).unwrap_or("day");
    let span = match tf {
        "hour" => chrono::Duration::hours(1),
        "day" => chrono::Duration::days(1),
        "week" => chrono::Duration::weeks(1),
        _ => return Err(SeedError::invalid_timeframe()),
    };
    Ok((tf, Utc::now() - span))
}

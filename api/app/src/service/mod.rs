//! The command/query layer both HTTP surfaces (`/v1`, `/api`) and the orchestrator share.
//!
//! A command runs as: take the stream's in-process lock, recall the idempotency key (a
//! retried request gets its original result), load and fold the stream, decide, and append
//! with the expected version the decision was made against. Without `If-Match` a conflict
//! (another process won the race) is retried against the new state; with it, a stale
//! version is the client's 409.

mod cache;
pub mod claims;
mod error;
mod execute;
pub mod leases;
pub mod machines;
pub mod queue;

pub use error::ServiceError;

use std::sync::Arc;

use jobsource_domain::job::{Job, JobCommand, SubmitJob};
use jobsource_domain::workflow::{CreateWorkflow, Workflow, WorkflowCommand};
use jobsource_domain::{job_stream, workflow_stream, Aggregate, DomainError};
use jobsource_eventstore::typed::{from_envelope, EventPayload};
use jobsource_eventstore::{
    EventStore, Idempotency, Position, RecordedEvent, StoreError, StreamLocks,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::catalog::Catalog;
use queue::QueueConfig;

/// Conflict retries before giving up with [`ServiceError::Contention`].
const CONFLICT_RETRIES: usize = 8;

/// Who asks, and under which ids: carried into every event's envelope.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    /// Correlation id (from `X-Correlation-Id`, or generated).
    pub correlation_id: String,
    /// The event or request that caused this command.
    pub causation_id: Option<String>,
    /// `Idempotency-Key` with the fingerprint of the request body.
    pub idempotency: Option<Idempotency>,
    /// `If-Match`: the version the client last saw.
    pub expected_version: Option<u64>,
    /// Free-form actor name stored in metadata (`api`, `orchestrator`, an API key name).
    pub actor: Option<String>,
}

impl CommandContext {
    /// A context with a fresh correlation id.
    pub fn new() -> Self {
        CommandContext {
            correlation_id: Uuid::now_v7().to_string(),
            ..CommandContext::default()
        }
    }

    /// Attaches an idempotency key whose fingerprint is the SHA-256 of `request`.
    pub fn with_idempotency_key(mut self, key: impl Into<String>, request: &[u8]) -> Self {
        self.idempotency = Some(Idempotency::new(key, fingerprint(request)));
        self
    }
}

/// SHA-256 (first 16 bytes, hex) of a request body: what "the same request" means.
pub fn fingerprint(request: &[u8]) -> String {
    hex::encode(&Sha256::digest(request)[..16])
}

/// The result of a command.
#[derive(Debug, Clone)]
pub struct Outcome<A> {
    /// The aggregate after the command.
    pub state: A,
    /// Stream version after the command.
    pub version: u64,
    /// Position of the last event written (`None` when the command changed nothing).
    pub position: Option<Position>,
    /// True when this is the recorded result of an earlier request with the same key.
    pub replayed: bool,
    /// Ids of the events the command wrote (the causation id of what they cause).
    pub event_ids: Vec<Uuid>,
}

/// Commands and consistent (store-folded) reads.
pub struct Service {
    store: Arc<dyn EventStore>,
    locks: StreamLocks,
    catalog: Option<Arc<Catalog>>,
    queue: QueueConfig,
    /// `JOBSOURCE_WEBHOOK_DENY_PRIVATE`: refuse webhook targets on non-public addresses.
    deny_private_webhooks: bool,
    /// Woken when this process makes a job claimable (waiting claims retry at once).
    ready: tokio::sync::Notify,
    /// Where the next claim starts looking (round robin over partitions).
    next_partition: std::sync::atomic::AtomicU32,
    /// Folded states of recently commanded streams (decisions without a history read).
    states: cache::StateCache,
}

impl Service {
    /// A service over `store`, checking job types against `catalog` when one is given.
    pub fn new(store: Arc<dyn EventStore>, catalog: Option<Arc<Catalog>>) -> Self {
        Service {
            store,
            locks: StreamLocks::default(),
            catalog,
            queue: QueueConfig::default(),
            deny_private_webhooks: false,
            ready: tokio::sync::Notify::new(),
            next_partition: std::sync::atomic::AtomicU32::new(0),
            states: cache::StateCache::default(),
        }
    }

    /// The same service with these job queue settings.
    pub fn with_queue_config(mut self, config: QueueConfig) -> Self {
        self.queue = config;
        self
    }

    /// Refuses webhook targets on loopback, private and link-local addresses at submission
    /// (see [`crate::webhooks::targets`]).
    pub fn with_deny_private_webhooks(mut self, deny: bool) -> Self {
        self.deny_private_webhooks = deny;
        self
    }

    /// 422 naming `webhook_url` when the policy refuses `url`.
    async fn check_webhook(&self, url: Option<&str>) -> Result<(), ServiceError> {
        let Some(url) = url.filter(|_| self.deny_private_webhooks) else {
            return Ok(());
        };
        match crate::webhooks::targets::refused(url).await {
            Some(why) => Err(ServiceError::validation(
                "webhook_url",
                format!("{why} (JOBSOURCE_WEBHOOK_DENY_PRIVATE)"),
            )),
            None => Ok(()),
        }
    }

    /// The job queue settings.
    pub fn queue_config(&self) -> &QueueConfig {
        &self.queue
    }

    /// The event store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The job-type catalog, if one is configured.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_deref()
    }

    /// Submits a job (`job_id` nil: one is allocated).
    pub async fn submit_job(
        &self,
        mut submit: SubmitJob,
        ctx: &CommandContext,
    ) -> Result<Outcome<Job>, ServiceError> {
        self.check_webhook(submit.webhook_url.as_deref()).await?;
        if submit.job_id.is_nil() {
            submit.job_id = self.allocate("job", ctx).await?;
        }
        if let Some(catalog) = &self.catalog {
            catalog
                .check_submit(&mut submit)
                .map_err(DomainError::Validation)?;
        }
        let id = submit.job_id;
        self.job(id, JobCommand::Submit(submit), ctx).await
    }

    /// Runs a command on job `id`.
    pub async fn job(
        &self,
        id: Uuid,
        command: JobCommand,
        ctx: &CommandContext,
    ) -> Result<Outcome<Job>, ServiceError> {
        let is_submit = matches!(command, JobCommand::Submit(_));
        self.execute::<Job>(&job_stream(id), command, is_submit, ctx)
            .await
    }

    /// Runs several commands on job `id` as one: decided in order, appended together.
    pub async fn job_commands(
        &self,
        id: Uuid,
        commands: Vec<JobCommand>,
        ctx: &CommandContext,
    ) -> Result<Outcome<Job>, ServiceError> {
        self.execute_all::<Job>(&job_stream(id), commands, false, ctx)
            .await
    }

    /// Creates a workflow and submits every step's job before answering, so a client can
    /// read them at once (the orchestrator would submit them too, after a crash here; the
    /// deterministic idempotency keys make the two paths one).
    pub async fn create_workflow(
        &self,
        mut create: CreateWorkflow,
        ctx: &CommandContext,
    ) -> Result<Outcome<Workflow>, ServiceError> {
        self.check_webhook(create.webhook_url.as_deref()).await?;
        if create.workflow_id.is_nil() {
            create.workflow_id = self.allocate("workflow", ctx).await?;
        }
        if create.job_ids.is_empty() {
            // Step job ids derive from the workflow id, so a retried create (same
            // reserved workflow id) allocates the same ones.
            create.job_ids = (0..create.steps.len())
                .map(|i| step_job_id(create.workflow_id, i))
                .collect();
        }
        if let Some(catalog) = &self.catalog {
            let errors: Vec<_> = create
                .steps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| catalog.check_step(i, s).err())
                .flatten()
                .collect();
            if !errors.is_empty() {
                return Err(DomainError::Validation(errors).into());
            }
        }
        let id = create.workflow_id;
        let outcome = self
            .execute::<Workflow>(
                &workflow_stream(id),
                WorkflowCommand::Create(create),
                true,
                ctx,
            )
            .await?;
        let submits = step_submissions(&outcome.state);
        let step_ctx = CommandContext {
            correlation_id: ctx.correlation_id.clone(),
            causation_id: outcome.event_ids.first().map(Uuid::to_string),
            actor: ctx.actor.clone(),
            ..CommandContext::default()
        };
        let results =
            futures::future::join_all(submits.into_iter().map(|s| self.submit_step(s, &step_ctx)))
                .await;
        for r in results {
            r?;
        }
        Ok(outcome)
    }

    /// A fresh id for a created aggregate; with an idempotency key, the id reserved for it
    /// (so a retry targets the same stream and gets the recorded answer).
    async fn allocate(&self, kind: &str, ctx: &CommandContext) -> Result<Uuid, ServiceError> {
        let fresh = Uuid::now_v7();
        let Some(idem) = &ctx.idempotency else {
            return Ok(fresh);
        };
        let held = self
            .store
            .reserve(&format!("{kind}:{}", idem.key), &fresh.to_string())
            .await?;
        Uuid::parse_str(&held)
            .map_err(|e| ServiceError::Internal(format!("reserved id {held:?}: {e}")))
    }

    /// Submits one workflow step's job with the key the orchestrator uses too.
    pub async fn submit_step(
        &self,
        submit: SubmitJob,
        ctx: &CommandContext,
    ) -> Result<(), ServiceError> {
        let key = format!("workflow-step:{}", submit.job_id);
        let body =
            serde_json::to_vec(&submit).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let ctx = CommandContext {
            idempotency: Some(Idempotency::new(key, fingerprint(&body))),
            ..ctx.clone()
        };
        match self
            .job(submit.job_id, JobCommand::Submit(submit), &ctx)
            .await
        {
            Ok(_) | Err(ServiceError::Domain(DomainError::AlreadyExists { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs a command on workflow `id`.
    pub async fn workflow(
        &self,
        id: Uuid,
        command: WorkflowCommand,
        ctx: &CommandContext,
    ) -> Result<Outcome<Workflow>, ServiceError> {
        self.execute::<Workflow>(&workflow_stream(id), command, false, ctx)
            .await
    }

    /// Folds job `id` from its history: the consistent, current state.
    pub async fn load_job(&self, id: Uuid) -> Result<Job, ServiceError> {
        Ok(self.load::<Job>(&job_stream(id)).await?.0)
    }

    /// Job `id` for its definition only (type, workflow, step, dependencies, webhook, which
    /// never change after submission): the state cached by this process's last command on
    /// it when there is one, else the fold. Its status may be behind; use [`Service::load_job`]
    /// for anything that depends on it.
    pub async fn job_definition(&self, id: Uuid) -> Result<Job, ServiceError> {
        match self.states.get::<Job>(&job_stream(id)) {
            Some(job) => Ok(job),
            None => self.load_job(id).await,
        }
    }

    /// Folds workflow `id` from its history.
    pub async fn load_workflow(&self, id: Uuid) -> Result<Workflow, ServiceError> {
        Ok(self.load::<Workflow>(&workflow_stream(id)).await?.0)
    }

    /// Reads a stream's envelopes (the audit trail of one aggregate).
    pub async fn history(&self, stream: &str) -> Result<Vec<RecordedEvent>, ServiceError> {
        Ok(self.store.read_stream_all(stream).await?)
    }

    pub(crate) async fn load<A>(
        &self,
        stream: &str,
    ) -> Result<(A, Vec<RecordedEvent>), ServiceError>
    where
        A: Aggregate,
        A::Event: EventPayload,
    {
        let history = self.store.read_stream_all(stream).await?;
        let mut state = A::default();
        for e in &history {
            let event: A::Event = from_envelope(&e.envelope)
                .map_err(|d| ServiceError::Internal(StoreError::Decode(d).to_string()))?;
            state.apply(&event);
        }
        Ok((state, history))
    }
}

/// The job id of step `index` of workflow `workflow_id`: a UUID v7 sharing the
/// workflow's timestamp, with the rest derived from (workflow id, index): deterministic,
/// and sorting with its workflow's time.
pub fn step_job_id(workflow_id: Uuid, index: usize) -> Uuid {
    let digest = Sha256::new()
        .chain_update(workflow_id.as_bytes())
        .chain_update((index as u64).to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&workflow_id.as_bytes()[..6]);
    bytes[6..].copy_from_slice(&digest[..10]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f); // version 7
    bytes[8] = 0x80 | (bytes[8] & 0x3f); // RFC 4122 variant
    Uuid::from_bytes(bytes)
}

/// The SubmitJob of every step of a created workflow (depends_on mapped to job ids).
pub fn step_submissions(workflow: &Workflow) -> Vec<SubmitJob> {
    let Some(def) = &workflow.definition else {
        return Vec::new();
    };
    def.steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let job_id = *def.job_ids.get(i)?;
            Some(SubmitJob {
                job_id,
                job_type: step.job_type.clone(),
                prompt: step.prompt.clone(),
                parameters: step.parameters.clone().unwrap_or_default(),
                workflow_id: Some(def.workflow_id),
                step_index: Some(i as u32),
                depends_on: step
                    .depends_on
                    .iter()
                    .filter_map(|d| def.job_ids.get(*d as usize).copied())
                    .collect(),
                ..SubmitJob::default()
            })
        })
        .collect()
}

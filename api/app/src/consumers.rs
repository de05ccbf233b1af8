//! The registry of consumers: every subscriber of the event log, by name, built once at
//! start and used by `serve` (to run them), the API (`GET /v1/projections`,
//! `POST /v1/projections/{name}/resume`) and the CLI (`jobsource projections status|resume`).
//!
//! Durable mode: `archive`, `postgres`, `webhooks` (PostgreSQL, stalls in
//! `projection_checkpoints`), `redis` (stalls in `<rm>:projection:redis:state`),
//! `orchestrator` and, with `JOBSOURCE_SEED_BUS`, `seed_bus` (stalls in
//! `<prefix>:subscriber:<name>:state`). Embedded mode: `memory`, `webhooks`,
//! `orchestrator`, with their stalls in memory.

use std::sync::Arc;

use jobsource_eventstore::redis::RedisConn;
use jobsource_eventstore::EventStore;
use jobsource_projections::rebuilder::Rebuilder;
use jobsource_projections::redis_worker::PARALLEL_PARTITIONS;
use jobsource_projections::subscriber::lease::{Claims, LeaseStore};
use jobsource_projections::subscriber::pg::{PgHandler, PgStatusStore};
use jobsource_projections::subscriber::redis::{RedisModelHandler, RedisStatusStore};
use jobsource_projections::subscriber::{
    HandlerError, MemoryStatusStore, StatusRow, StatusStore, Subscriber, WakeHub,
};
use jobsource_projections::worker::WorkerConfig;
use jobsource_projections::{Archive, PgProjection, PostgresReadModel, RedisReadModel};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::orchestrator::{MemoryOrchestratorState, Orchestrator, RedisOrchestratorState};
use crate::read::memory::MemoryReadModel;
use crate::read::ProjectionStatus;
use crate::service::{Service, ServiceError};
use crate::webhooks::DeliveryStore;

/// Every consumer of the log, by name, with the rebuild and verify of those that are
/// rebuildable read models.
#[derive(Default)]
pub struct Consumers {
    entries: Vec<Arc<Subscriber>>,
    rebuilders: Vec<Arc<dyn Rebuilder>>,
}

/// What the durable registry is built from.
pub struct DurableParts {
    /// The event store.
    pub store: Arc<dyn EventStore>,
    /// A connection to the store's Redis (orchestrator and seed-bus state).
    pub conn: RedisConn,
    /// The store's key prefix.
    pub prefix: String,
    /// The PostgreSQL read models' pool (migrated); without it (the CLI given no
    /// `DATABASE_URL`) the registry holds only the Redis-side consumers.
    pub pool: Option<PgPool>,
    /// The `redis` read model.
    pub model: Arc<RedisReadModel>,
    /// The command layer (the orchestrator's commands).
    pub service: Arc<Service>,
    /// Batch and retry settings of the projections.
    pub worker: WorkerConfig,
    /// The seed message bus bridge, when enabled.
    pub seed_bus: Option<Arc<crate::seed_bus::SeedBus>>,
    /// Partition leases shared by the instances: the lease store, this instance's id and
    /// the lease length. `None`: this instance applies every partition.
    pub leases: Option<Leasing>,
}

/// How this instance shares the partitions with the others.
#[derive(Clone)]
pub struct Leasing {
    /// Where the leases live.
    pub store: Arc<dyn LeaseStore>,
    /// This instance's id (`JOBSOURCE_INSTANCE_ID`).
    pub instance: String,
    /// Lease length (`JOBSOURCE_LEASE_TTL_MS`).
    pub ttl: std::time::Duration,
}

impl Leasing {
    /// The claims of `consumer` on `partitions` partitions for this instance.
    pub fn claims(&self, consumer: &str, partitions: u32) -> Arc<Claims> {
        Arc::new(Claims::new(
            self.store.clone(),
            consumer,
            &self.instance,
            self.ttl,
            partitions,
        ))
    }
}

impl Consumers {
    /// An empty registry.
    pub fn new() -> Self {
        Consumers::default()
    }

    /// Adds `subscriber` (a later one with the same name replaces it).
    pub fn with(mut self, subscriber: Arc<Subscriber>) -> Self {
        self.entries.retain(|s| s.name() != subscriber.name());
        self.entries.push(subscriber);
        self
    }

    /// The durable deployment's consumers.
    pub fn durable(parts: DurableParts) -> Self {
        let DurableParts {
            store,
            conn,
            prefix,
            pool,
            model,
            service,
            worker,
            seed_bus,
            leases,
        } = parts;
        let partitions = store.partitions();
        // Every consumer holds its own leases, so instances share each one's partitions.
        let leased = |s: Subscriber| -> Arc<Subscriber> {
            match &leases {
                Some(l) => {
                    let claims = l.claims(s.name(), partitions);
                    Arc::new(s.with_claims(claims))
                }
                None => Arc::new(s),
            }
        };
        let redis_status = |name: &str| -> Arc<dyn StatusStore> {
            Arc::new(RedisStatusStore::new(
                conn.clone(),
                format!("{prefix}:subscriber:{name}:state"),
            ))
        };
        let mut registry = Consumers::new();
        registry.rebuilders = jobsource_projections::rebuilder::durable(
            &store,
            pool.as_ref(),
            Some((model.connection(), model.keys().namespace())),
        );
        if let Some(pool) = &pool {
            let pg_status: Arc<dyn StatusStore> = Arc::new(PgStatusStore::new(pool.clone()));
            let pg: [Arc<dyn PgProjection>; 3] = [
                Arc::new(Archive),
                Arc::new(PostgresReadModel),
                Arc::new(crate::webhooks::postgres::WebhookProjection::new(
                    store.clone(),
                )),
            ];
            for projection in pg {
                registry = registry.with(leased(Subscriber::new(
                    Arc::new(PgHandler::new(projection, pool.clone())),
                    store.clone(),
                    pg_status.clone(),
                    worker.subscriber(1),
                )));
            }
        }
        registry = registry.with(leased(Subscriber::new(
            Arc::new(RedisModelHandler::new(model.clone())),
            store.clone(),
            Arc::new(RedisStatusStore::for_model(&model)),
            worker.subscriber(PARALLEL_PARTITIONS),
        )));
        let mut orchestrator = Orchestrator::new(
            service,
            Arc::new(RedisOrchestratorState::new(conn.clone(), &prefix)),
        )
        .with_status_store(redis_status(crate::orchestrator::NAME));
        if let Some(l) = &leases {
            orchestrator =
                orchestrator.with_claims(l.claims(crate::orchestrator::NAME, partitions));
        }
        registry = registry.with(orchestrator.subscriber().clone());
        if let Some(bus) = seed_bus {
            let config = bus.subscriber_config();
            registry = registry.with(leased(Subscriber::new(
                bus,
                store,
                redis_status(crate::seed_bus::NAME),
                config,
            )));
        }
        registry
    }

    /// The embedded deployment's consumers (state in memory).
    pub fn embedded(
        service: Arc<Service>,
        model: Arc<MemoryReadModel>,
        deliveries: Arc<dyn DeliveryStore>,
        worker: &WorkerConfig,
    ) -> Self {
        let store = service.store().clone();
        let status: Arc<dyn StatusStore> = Arc::new(MemoryStatusStore::new());
        let enqueuer = Arc::new(crate::webhooks::memory::MemoryEnqueuer::new(
            store.clone(),
            deliveries,
        ));
        let orchestrator = Orchestrator::new(service, Arc::new(MemoryOrchestratorState::new()))
            .with_status_store(status.clone());
        Consumers::new()
            .with(Arc::new(Subscriber::new(
                model,
                store.clone(),
                status.clone(),
                worker.subscriber(1),
            )))
            .with(Arc::new(Subscriber::new(
                enqueuer,
                store,
                status,
                worker.subscriber(1),
            )))
            .with(orchestrator.subscriber().clone())
    }

    /// The rebuild and verify of read model `name`, or a 400 naming the rebuildable ones.
    pub fn rebuilder(&self, name: &str) -> Result<&Arc<dyn Rebuilder>, ServiceError> {
        self.rebuilders
            .iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.rebuilders.iter().map(|r| r.name()).collect();
                ServiceError::bad_request(
                    "name",
                    format!(
                        "{name:?} cannot be rebuilt here; rebuildable: {}",
                        known.join(", ")
                    ),
                )
            })
    }

    /// The rebuildable read models and what each owns (tables or keys).
    pub fn owned(&self) -> Vec<(String, String)> {
        self.rebuilders
            .iter()
            .map(|r| (r.name().to_owned(), r.owns()))
            .collect()
    }

    /// The consumer called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Subscriber>> {
        self.entries.iter().find(|s| s.name() == name)
    }

    /// Every consumer's name, in registry order.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|s| s.name().to_owned()).collect()
    }

    /// The consumer called `name`, or a 400 naming the known ones.
    pub fn named(&self, name: &str) -> Result<&Arc<Subscriber>, ServiceError> {
        self.get(name).ok_or_else(|| {
            ServiceError::bad_request(
                "name",
                format!(
                    "unknown consumer {name:?}; known: {}",
                    self.names().join(", ")
                ),
            )
        })
    }

    /// Starts every consumer's task; each ends when `shutdown` turns true.
    ///
    /// The consumers share one live tail (a [`WakeHub`]): the log is followed and decoded
    /// once per process for all of them, not once per consumer.
    pub fn spawn(&self, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::with_capacity(self.entries.len() + 1);
        if let Some(first) = self.entries.first() {
            let hub = WakeHub::new();
            for s in &self.entries {
                hub.register(s);
            }
            tasks.push(hub.spawn(first.store().clone(), shutdown.clone()));
        }
        tasks.extend(
            self.entries
                .iter()
                .map(|s| tokio::spawn(s.clone().run(shutdown.clone()))),
        );
        tasks
    }

    /// Status rows of every consumer and partition.
    pub async fn rows(&self, lag_cap: usize) -> Vec<StatusRow> {
        let all = futures::future::join_all(self.entries.iter().map(|s| s.status(lag_cap))).await;
        all.into_iter().flatten().collect()
    }

    /// Status rows as the API shows them, sorted by consumer and partition.
    pub async fn status(&self, lag_cap: usize) -> Vec<ProjectionStatus> {
        let mut rows: Vec<ProjectionStatus> = self
            .rows(lag_cap)
            .await
            .into_iter()
            .map(|r| ProjectionStatus {
                projection: r.consumer,
                partition: r.partition,
                checkpoint: r.checkpoint,
                lag: r.lag,
                state: r.state,
                last_error: match (r.last_error, r.error_position) {
                    (Some(e), Some(p)) if !p.is_empty() && !e.contains(&p) => {
                        Some(format!("{e} (at {p})"))
                    }
                    (e, _) => e,
                },
                owner: r.owner,
                lease_expires_at: r.lease_expires_at.and_then(|ms| {
                    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                }),
                rebuild: None,
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.projection.as_str(), a.partition).cmp(&(b.projection.as_str(), b.partition))
        });
        rows
    }

    /// Clears the stalls of consumer `name`; returns how many partitions were stalled.
    pub async fn resume(&self, name: &str) -> Result<u64, ServiceError> {
        self.named(name)?.resume().await.map_err(status_error)
    }
}

/// A status-store failure as the command layer reports it.
pub fn status_error(e: HandlerError) -> ServiceError {
    match e {
        HandlerError::Unavailable(message) => ServiceError::Unavailable {
            backend: "status",
            message,
        },
        HandlerError::Failed { message, .. } => ServiceError::Internal(message),
    }
}

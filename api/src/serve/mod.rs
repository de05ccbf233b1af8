//! `jobsource serve`: the API, the projectors and the orchestrator in one process.
//!
//! Full mode (`REDIS_URL` and `DATABASE_URL` set): the Redis event store, the `redis`,
//! `postgres` and `archive` projections as durable workers with checkpoints, the
//! orchestrator as a durable subscriber, the `webhooks` enqueue projection. Embedded mode
//! (no `REDIS_URL`): the in-memory store, the in-memory read model, orchestrator and
//! webhook enqueuer; nothing persists. With `JOBSOURCE_SEED_BUS` (full mode only) the seed
//! message bus bridge ([`jobsource_app::seed_bus`]) runs too. Both modes run the webhook sender,
//! the machine timeout sweeper and the job lease timers.
//!
//! Shutdown drains: the server stops accepting, in-flight requests finish, then the
//! background workers are told to stop and each does so at a batch boundary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jobsource_eventstore::redis::RedisTarget;
use jobsource_eventstore::{EventStore, MemoryStore, RedisStore, StoreConfig, StoreError};
use jobsource_projections::worker::WorkerConfig;
use jobsource_projections::{ProjectionError, RedisReadModel};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use jobsource_app::catalog::{Catalog, CatalogError};
use jobsource_app::consumers::{Consumers, DurableParts, Leasing};
use jobsource_app::read::full::FullReadSide;
use jobsource_app::read::memory::MemoryReadModel;
use jobsource_app::read::ReadSide;
use jobsource_app::service::Service;
use jobsource_http::{app, AppState, HttpConfig};
use jobsource_projections::subscriber::lease::RedisLeaseStore;

mod config;
pub use config::*;

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (service, read side).
    pub state: AppState,
    stop_http: watch::Sender<bool>,
    stop_workers: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts everything and begins serving.
    pub async fn start(config: ServeConfig) -> Result<Server, ServeError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Server::start_on(config, listener).await
    }

    /// Starts on an already bound listener (tests bind port 0).
    pub async fn start_on(
        config: ServeConfig,
        listener: TcpListener,
    ) -> Result<Server, ServeError> {
        let addr = listener.local_addr().map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
        let catalog = match &config.job_types_file {
            Some(path) => {
                let c = Catalog::load(path)?;
                tracing::info!(path = %path.display(), types = c.len(), "job-type catalog loaded");
                Some(Arc::new(c))
            }
            None => None,
        };
        let store_config = StoreConfig {
            prefix: config.prefix.clone(),
            partitions: config.partitions,
            group_commit_max: config.group_commit_max,
            group_commit_lanes: config.group_commit_lanes,
            ..StoreConfig::default()
        };
        let (stop_workers, workers_rx) = watch::channel(false);
        let mut workers = Vec::new();
        // Durable mode: the job queue's timers are leased per partition like a consumer.
        let mut timer_claims = None;
        let target = match (&config.redis_url, &config.redis_cluster_nodes) {
            (None, None) => None,
            (url, nodes) => Some(RedisTarget::from_settings(
                url.as_deref(),
                nodes.as_deref(),
                "",
            )?),
        };
        let (state, consumers) = match target {
            None => {
                tracing::warn!(
                    "embedded mode: in-memory event store and read models; NOTHING PERSISTS \
                     (set REDIS_URL and DATABASE_URL for the durable deployment)"
                );
                if config.seed_bus {
                    tracing::warn!(
                        "JOBSOURCE_SEED_BUS is set but the seed message bus needs Redis: \
                         not started in embedded mode (set REDIS_URL and DATABASE_URL)"
                    );
                }
                let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new(store_config));
                let service = Arc::new(
                    Service::new(store.clone(), catalog)
                        .with_queue_config(config.queue.clone())
                        .with_deny_private_webhooks(config.webhooks.deny_private),
                );
                let model = MemoryReadModel::new(store.clone());
                let deliveries: Arc<dyn jobsource_app::webhooks::DeliveryStore> =
                    Arc::new(jobsource_app::webhooks::memory::MemoryDeliveryStore::new());
                let consumers = Arc::new(Consumers::embedded(
                    service.clone(),
                    model.clone(),
                    deliveries.clone(),
                    &config.worker,
                ));
                let read: Arc<dyn ReadSide> = model;
                (
                    AppState::new(service, read, config.http.clone())
                        .with_webhooks(deliveries)
                        .with_seen(Arc::new(
                            jobsource_app::service::machines::MemorySeenStore::new(),
                        )),
                    consumers,
                )
            }
            Some(target) => {
                let database_url = config.database_url.as_deref().ok_or_else(|| {
                    ServeError::Config(
                        "REDIS_URL is set but DATABASE_URL is not: the durable deployment needs \
                         both (unset REDIS_URL for embedded mode)"
                            .into(),
                    )
                })?;
                // The namespace rule is checked before connecting: a bad setting is named
                // at once, whatever the servers' state.
                let rm = jobsource_projections::redis::read_namespace(
                    config.read_prefix.as_deref(),
                    &config.prefix,
                    matches!(target, RedisTarget::Cluster(_)),
                )
                .map_err(ServeError::Config)?;
                let redis = RedisStore::connect(target, store_config).await?;
                let conn = redis.connection();
                let store: Arc<dyn EventStore> = Arc::new(redis);
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(database_url)
                    .await
                    .map_err(ProjectionError::Database)?;
                jobsource_projections::migrate::migrate(&pool).await?;
                let model = Arc::new(RedisReadModel::new(conn.clone(), &rm));
                let seen = Arc::new(jobsource_app::service::machines::RedisSeenStore::new(
                    conn.clone(),
                    &config.prefix,
                    store.partitions(),
                ));
                let service = Arc::new(
                    Service::new(store.clone(), catalog)
                        .with_queue_config(config.queue.clone())
                        .with_deny_private_webhooks(config.webhooks.deny_private),
                );
                let leasing = Leasing {
                    store: Arc::new(RedisLeaseStore::new(conn.clone(), &config.prefix)),
                    instance: config.instance_id.clone(),
                    ttl: config.lease_ttl,
                };
                timer_claims = Some(leasing.claims("timers", store.partitions()));
                let seed_bus = config.seed_bus.then(|| {
                    // A non-empty read prefix namespaces the seed-facing keys; the bus
                    // follows it (unset or empty: the seed's bare channel and stream names).
                    let namespace = config
                        .read_prefix
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_default();
                    Arc::new(jobsource_app::seed_bus::SeedBus::new(
                        store.clone(),
                        conn.clone(),
                        &config.prefix,
                        jobsource_app::seed_bus::SeedBusConfig {
                            maxlen: config.seed_bus_maxlen,
                            namespace,
                            ..jobsource_app::seed_bus::SeedBusConfig::default()
                        },
                    ))
                });
                let consumers = Arc::new(Consumers::durable(DurableParts {
                    store: store.clone(),
                    conn: conn.clone(),
                    prefix: config.prefix.clone(),
                    pool: Some(pool.clone()),
                    model: model.clone(),
                    service: service.clone(),
                    worker: config.worker.clone(),
                    seed_bus,
                    leases: Some(leasing.clone()),
                }));
                let deliveries = Arc::new(jobsource_app::webhooks::postgres::PgDeliveryStore::new(
                    pool.clone(),
                ));
                let read: Arc<dyn ReadSide> =
                    Arc::new(FullReadSide::new(store.clone(), model, pool));
                (
                    AppState::new(service, read, config.http.clone())
                        .with_webhooks(deliveries)
                        .with_seen(seen),
                    consumers,
                )
            }
        };
        workers.extend(consumers.spawn(&workers_rx));
        let state = state.with_consumers(consumers);
        let sweeper = jobsource_app::service::machines::sweeper::Sweeper::new(
            state.service().clone(),
            state.seen().clone(),
            config.machine_timeout,
        );
        workers.push(tokio::spawn(Arc::new(sweeper).run(workers_rx.clone())));
        workers.push(tokio::spawn(jobsource_app::service::leases::run_sweeper(
            state.service().clone(),
            config.lease_sweep,
            timer_claims,
            workers_rx.clone(),
        )));
        if let Some(deliveries) = state.webhooks() {
            let sender = jobsource_app::webhooks::sender::Sender::new(
                deliveries.clone(),
                config.webhooks.clone(),
            )
            .map_err(ServeError::Config)?;
            workers.push(tokio::spawn(Arc::new(sender).run(workers_rx.clone())));
        }
        jobsource_app::metrics::install();
        // One live tail of the log for every WebSocket client.
        let feed = jobsource_app::live::LiveFeed::with_config(config.live);
        workers.push(tokio::spawn(
            feed.clone()
                .run(state.service().store().clone(), workers_rx.clone()),
        ));
        let state = state.with_live(feed);
        workers.push(tokio::spawn(sample_status(
            state.clone(),
            workers_rx.clone(),
        )));
        let (stop_http, mut http_rx) = watch::channel(false);
        let router = app(state.clone());
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_rx.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%addr, mode = state.read().mode(), "jobsource listening");
        Ok(Server {
            addr,
            state,
            stop_http,
            stop_workers,
            http,
            workers,
        })
    }

    /// Drains: stop accepting, finish in-flight requests, then stop the workers at a
    /// batch boundary.
    pub async fn shutdown(self) {
        self.state.begin_shutdown();
        let _ = self.stop_http.send(true);
        match self.http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
        }
        let _ = self.stop_workers.send(true);
        for w in self.workers {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "background worker task failed");
            }
        }
        tracing::info!("jobsource stopped");
    }

    /// Serves until Ctrl-C or SIGTERM, then drains.
    pub async fn run_until_signal(self) {
        shutdown_signal().await;
        tracing::info!("shutdown requested; draining");
        self.shutdown().await;
    }
}

/// Refreshes the projection lag and stall gauges every few seconds.
async fn sample_status(state: AppState, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if let Ok(rows) = state.projection_status().await {
            jobsource_app::metrics::record_status(&rows);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

//! Operating the production read side: status rows with lags (`GET /v1/projections`) and
//! background rebuilds (`POST /v1/projections/{name}/rebuild`), one at a time per
//! projection, tracked until the rebuild task ends.

use std::collections::BTreeSet;

use jobsource_eventstore::{Cursor, LogId, Offset, Position};
use jobsource_projections::{redis_worker, worker};

use super::{FullReadSide, LAG_CAP, REBUILD_BATCH};
use crate::read::{ProjectionStatus, QueryError};

impl FullReadSide {
    /// Log entries of partition `p` after `after` (at most [`LAG_CAP`]).
    async fn lag(&self, p: u32, after: LogId, head: &Cursor) -> u64 {
        if after >= head.after(p) {
            return 0;
        }
        // An unreadable entry (the likely cause of a stall) must not hide the status: count
        // it as the cap, like the PostgreSQL status does.
        self.store
            .read_partition(p, after, LAG_CAP)
            .await
            .map_or(LAG_CAP as u64, |e| e.len() as u64)
    }

    /// The `redis` projection's status rows.
    async fn redis_status(&self, head: &Cursor) -> Result<Vec<ProjectionStatus>, QueryError> {
        let mut out = Vec::new();
        let rm = self.redis.keys().namespace();
        let rebuilding = jobsource_projections::redis::rebuild::is_rebuilding(&self.conn(), rm)
            .await
            .map_err(QueryError::from)?;
        for p in 0..self.store.partitions() {
            let checkpoint = self.redis.checkpoint(p).await.map_err(QueryError::from)?;
            let stall = redis_worker::stalled(&self.redis, p)
                .await
                .map_err(QueryError::from)?;
            out.push(ProjectionStatus {
                projection: "redis".into(),
                partition: p,
                checkpoint: Position::new(p, checkpoint).to_string(),
                lag: self.lag(p, checkpoint, head).await,
                state: if stall.is_some() {
                    "stalled"
                } else if rebuilding {
                    "rebuilding"
                } else {
                    "running"
                }
                .into(),
                last_error: stall.map(|(position, error)| with_position(error, Some(position))),
                rebuild: None,
                owner: None,
                lease_expires_at: None,
            });
        }
        Ok(out)
    }

    /// Status rows of every projection: the PostgreSQL ones from their checkpoint rows
    /// (every partition, even those without a row yet), then the `redis` one.
    pub(super) async fn status_rows(&self) -> Result<Vec<ProjectionStatus>, QueryError> {
        let mut out: Vec<ProjectionStatus> = worker::status(&*self.store, &self.pool, LAG_CAP)
            .await
            .map_err(QueryError::from)?
            .into_iter()
            .map(|r| ProjectionStatus {
                projection: r.projection,
                partition: r.partition,
                checkpoint: r.checkpoint,
                lag: r.lag,
                state: r.state,
                last_error: r.last_error.map(|e| with_position(e, r.error_position)),
                rebuild: None,
                owner: None,
                lease_expires_at: None,
            })
            .collect();
        // A PostgreSQL projection gets its checkpoint row with its first applied batch, so
        // partitions it never had events in have none: show them at the start of the log.
        let head = self.store.head().await?;
        let names: BTreeSet<String> = out.iter().map(|r| r.projection.clone()).collect();
        for name in names {
            for p in 0..self.store.partitions() {
                if out.iter().any(|r| r.projection == name && r.partition == p) {
                    continue;
                }
                out.push(ProjectionStatus {
                    projection: name.clone(),
                    partition: p,
                    checkpoint: Position::new(p, LogId::ZERO).to_string(),
                    lag: self.lag(p, LogId::ZERO, &head).await,
                    state: "running".into(),
                    last_error: None,
                    rebuild: None,
                    owner: None,
                    lease_expires_at: None,
                });
            }
        }
        out.extend(self.redis_status(&head).await?);
        out.sort_by(|a, b| {
            (a.projection.as_str(), a.partition).cmp(&(b.projection.as_str(), b.partition))
        });
        Ok(out)
    }

    /// Starts a background rebuild of projection `name` (one at a time per projection),
    /// its progress tracked for the status rows.
    pub(super) async fn start_rebuild(&self, name: &str, from: Offset) -> Result<(), QueryError> {
        let Some(rebuilder) = self.rebuilders.iter().find(|r| r.name() == name).cloned() else {
            let known: Vec<&str> = self.rebuilders.iter().map(|r| r.name()).collect();
            return Err(QueryError::bad_request(
                "name",
                format!(
                    "unknown projection {name:?}; known projections: {}",
                    known.join(", ")
                ),
            ));
        };
        let start = self.store.resolve(&from).await?;
        let Some(guard) = self.rebuilds.begin(name) else {
            return Err(QueryError::bad_request(
                "name",
                format!("a rebuild of {name} is already running"),
            ));
        };
        let name = name.to_owned();
        tracing::info!(projection = %name, from = %from, "rebuild started");
        tokio::spawn(async move {
            let begun = std::time::Instant::now();
            let progress = |done: u64, total: u64| guard.progress(done, total);
            match rebuilder
                .rebuild(Some(start), REBUILD_BATCH, &progress)
                .await
            {
                Ok(n) => tracing::info!(
                    projection = %name,
                    events = n,
                    events_per_s = jobsource_projections::rebuild::rate(n, begun),
                    "rebuild swapped in"
                ),
                Err(e) => tracing::error!(projection = %name, error = %e,
                    "rebuild failed; the live model keeps serving (a new rebuild starts over)"),
            }
        });
        Ok(())
    }
}

/// `error (at position)`, or just the error when the position is unknown.
fn with_position(error: String, position: Option<String>) -> String {
    match position {
        Some(p) if !p.is_empty() => format!("{error} (at {p})"),
        _ => error,
    }
}

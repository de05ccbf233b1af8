//! Where the runtime records each consumer's stalls and whether it runs, next to the
//! consumer's checkpoints, so that every process (the CLI, another instance) sees them and
//! `resume` clears a stall from anywhere.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::HandlerError;

/// The recorded state of one partition of a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Applying events.
    Running,
    /// The consumer's task ended (stop, shutdown, or a fatal error).
    Stopped,
    /// Stopped on a poison event until `resume`.
    Stalled {
        /// The error of the last attempt.
        error: String,
        /// The position of the event it failed at, when known.
        position: Option<String>,
    },
}

impl Recorded {
    /// `running`, `stopped` or `stalled`, as status shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Recorded::Running => "running",
            Recorded::Stopped => "stopped",
            Recorded::Stalled { .. } => "stalled",
        }
    }
}

/// Persistence of the runtime's per-partition state.
#[async_trait]
pub trait StatusStore: Send + Sync + 'static {
    /// What is recorded for `consumer`, by partition (a partition with no record runs).
    async fn load(&self, consumer: &str) -> Result<HashMap<u32, Recorded>, HandlerError>;

    /// Records that `partition` of `consumer` stalled at `position` with `error`.
    async fn stall(
        &self,
        consumer: &str,
        partition: u32,
        error: &str,
        position: Option<&str>,
    ) -> Result<(), HandlerError>;

    /// Clears every stall of `consumer`; returns how many partitions were stalled.
    async fn resume(&self, consumer: &str) -> Result<u64, HandlerError>;

    /// Marks every partition of `consumer` that is not stalled running or stopped.
    async fn set_running(
        &self,
        consumer: &str,
        partitions: u32,
        running: bool,
    ) -> Result<(), HandlerError>;
}

/// One partition of one consumer, as `GET /v1/projections` and `projections status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    /// Consumer name.
    pub consumer: String,
    /// Partition.
    pub partition: u32,
    /// Checkpoint position (`<p>@<ms>-<seq>`).
    pub checkpoint: String,
    /// Events in the log after the checkpoint (capped).
    pub lag: u64,
    /// `running`, `stalled` or `stopped`.
    pub state: String,
    /// The last error (of a stall, or of the current retries).
    pub last_error: Option<String>,
    /// Where the stall happened.
    pub error_position: Option<String>,
    /// The instance holding the partition's lease (scale-out; `None` without leases or
    /// while nobody holds it).
    pub owner: Option<String>,
    /// When that lease runs out (ms since the Unix epoch, the store's clock).
    pub lease_expires_at: Option<u64>,
}

/// Status kept in memory (embedded mode and tests): lost with the process, like the
/// in-memory event store it goes with.
#[derive(Default)]
pub struct MemoryStatusStore {
    inner: Mutex<HashMap<String, HashMap<u32, Recorded>>>,
}

impl MemoryStatusStore {
    /// Nothing recorded.
    pub fn new() -> Self {
        MemoryStatusStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<u32, Recorded>>> {
        // Every mutation is one map write: a poisoned lock still holds a sound map.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl StatusStore for MemoryStatusStore {
    async fn load(&self, consumer: &str) -> Result<HashMap<u32, Recorded>, HandlerError> {
        Ok(self.lock().get(consumer).cloned().unwrap_or_default())
    }

    async fn stall(
        &self,
        consumer: &str,
        partition: u32,
        error: &str,
        position: Option<&str>,
    ) -> Result<(), HandlerError> {
        self.lock().entry(consumer.to_owned()).or_default().insert(
            partition,
            Recorded::Stalled {
                error: error.to_owned(),
                position: position.map(str::to_owned),
            },
        );
        Ok(())
    }

    async fn resume(&self, consumer: &str) -> Result<u64, HandlerError> {
        let mut all = self.lock();
        let Some(rows) = all.get_mut(consumer) else {
            return Ok(0);
        };
        let mut n = 0;
        for r in rows.values_mut() {
            if matches!(r, Recorded::Stalled { .. }) {
                *r = Recorded::Running;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn set_running(
        &self,
        consumer: &str,
        partitions: u32,
        running: bool,
    ) -> Result<(), HandlerError> {
        let mut all = self.lock();
        let rows = all.entry(consumer.to_owned()).or_default();
        for p in 0..partitions {
            let r = rows.entry(p).or_insert(Recorded::Running);
            if !matches!(r, Recorded::Stalled { .. }) {
                *r = if running {
                    Recorded::Running
                } else {
                    Recorded::Stopped
                };
            }
        }
        Ok(())
    }
}

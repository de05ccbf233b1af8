//! What a consumer implements to run on the subscriber runtime.

use async_trait::async_trait;
use jobsource_eventstore::{LogId, RecordedEvent, StoreError};

use crate::error::ProjectionError;

/// A consumer of the event log, driven by a [`crate::subscriber::Subscriber`].
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The consumer's name in status, metrics, the CLI and the API (`archive`, `redis`, ...).
    fn name(&self) -> &str;

    /// The log id of `partition` after which the consumer continues (`0-0` at the start).
    async fn checkpoint(&self, partition: u32) -> Result<LogId, HandlerError>;

    /// Applies `events`, the next events of `partition` after `after`, in log order, and
    /// moves the checkpoint past the last one applied: in the same transaction or script as
    /// the effects where the backend allows, else after them (the effects are then
    /// idempotent, so a crash in between only redelivers).
    ///
    /// A handler may save the progress of a prefix and then fail; the runtime reads the
    /// checkpoint again before it retries. [`Outcome::Moved`] says the checkpoint was no
    /// longer `after` (another worker applied the batch): nothing was written.
    ///
    /// `fence` is the epoch of this instance's lease on the partition (scale-out); a
    /// handler whose checkpoint store keeps fences refuses a write with a lower epoch than
    /// the last one recorded and answers [`Outcome::Fenced`].
    async fn apply(
        &self,
        partition: u32,
        after: LogId,
        events: &[RecordedEvent],
        fence: Option<u64>,
    ) -> Result<Outcome, HandlerError>;
}

/// What became of a batch that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, checkpoint moved.
    Applied,
    /// The checkpoint had moved meanwhile; nothing was written.
    Moved,
    /// A later lease holder wrote the checkpoint (a higher epoch): nothing was written and
    /// this instance no longer owns the partition.
    Fenced,
}

/// Why a batch did not apply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// A backend cannot be reached: waited out, never a reason to stall.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The batch failed: retried a bounded number of times, then the partition stalls.
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
        /// Where, when the handler knows (else the batch's first event is shown).
        position: Option<String>,
    },
}

impl HandlerError {
    /// A failure at an unknown position.
    pub fn failed(message: impl Into<String>) -> Self {
        HandlerError::Failed {
            message: message.into(),
            position: None,
        }
    }
}

impl From<ProjectionError> for HandlerError {
    fn from(e: ProjectionError) -> Self {
        if e.is_transient() {
            return HandlerError::Unavailable(e.to_string());
        }
        match e {
            ProjectionError::Apply { position, message } => HandlerError::Failed {
                message: format!("cannot apply event at {position}: {message}"),
                position: Some(position),
            },
            other => HandlerError::failed(other.to_string()),
        }
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        match e {
            e if e.is_unavailable() => HandlerError::Unavailable(e.to_string()),
            // An undecodable entry is itself the poison: its position is where to stall.
            StoreError::Decode(d) => HandlerError::Failed {
                message: format!("cannot decode the entry at {}: {}", d.at, d.message),
                position: Some(d.at),
            },
            other => HandlerError::failed(other.to_string()),
        }
    }
}

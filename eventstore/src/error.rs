//! Errors of the event store layer.
//!
//! One enum, [`StoreError`], for everything an append or a read can answer besides success.
//! Each variant documents what it means to an HTTP caller; the API layer maps them in one
//! place. Conflicts are a typed result of the atomic append, never parsed from text.

use crate::append::ExpectedVersion;

/// A malformed position, offset or log id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// What was wrong, naming the input.
    pub message: String,
}

impl ParseError {
    /// Creates a parse error with a message that names the bad input.
    pub fn new(message: impl Into<String>) -> Self {
        ParseError {
            message: message.into(),
        }
    }
}

/// A stored event that cannot be decoded (corrupt JSON, missing fields, unknown schema).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode event at {at}: {message}")]
pub struct DecodeError {
    /// Where the bad entry is: a position or `stream@version`.
    pub at: String,
    /// What is wrong with it.
    pub message: String,
}

/// Everything the event store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream's version did not match the expectation. HTTP 409 `VERSION_CONFLICT`.
    #[error("version conflict on {stream}: expected {expected}, actual {actual}")]
    Conflict {
        /// Stream appended to.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's current version.
        actual: u64,
    },
    /// An idempotency key was reused with a different request. HTTP 422 `IDEMPOTENCY_KEY_REUSED`.
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyKeyReused {
        /// The reused key.
        key: String,
    },
    /// An expiry's precondition failed: the lease was renewed, released or belongs to
    /// another attempt (a race the sweeper lost; nothing was appended).
    #[error("the lease of {stream} is not due")]
    LeaseNotDue {
        /// Stream of the job.
        stream: String,
    },
    /// The backend cannot be reached or timed out. HTTP 503 `STORE_UNAVAILABLE`.
    #[error("event store at {url} unavailable: {message}")]
    Unavailable {
        /// Backend address (credentials removed).
        url: String,
        /// Cause.
        message: String,
    },
    /// A stored entry could not be decoded. HTTP 500 (a real fault, not bad input).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The store was created with another partition count. Refused at start.
    #[error(
        "event store {prefix:?} was created with {stored} partitions but {configured} are \
         configured; the partition count is fixed when a store is first used (set \
         JOBSOURCE_PARTITIONS={stored} or use another JOBSOURCE_PREFIX)"
    )]
    PartitionMismatch {
        /// Key prefix of the store.
        prefix: String,
        /// Partition count recorded in `<prefix>:meta`.
        stored: u32,
        /// Partition count asked for now.
        configured: u32,
    },
    /// The store's settings contradict each other or the server (e.g. both `REDIS_URL`
    /// and `JOBSOURCE_REDIS_CLUSTER_NODES`). Refused at start; the message names the setting.
    #[error("{0}")]
    Config(String),
    /// The request itself is invalid (no events, bad stream name, bad offset). HTTP 400/422.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend answered with an unexpected error. HTTP 500.
    #[error("event store backend error: {0}")]
    Backend(String),
}

impl From<ParseError> for StoreError {
    fn from(e: ParseError) -> Self {
        StoreError::Invalid(e.message)
    }
}

impl StoreError {
    /// True for errors that mean "try again later" (outage, timeout).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

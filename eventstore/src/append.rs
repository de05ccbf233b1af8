//! Append requests and results: expected versions and idempotency keys.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::NewEvent;
use crate::position::Position;

/// What the caller believes the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be at exactly this version.
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn matches(&self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(n) => *n == actual,
        }
    }
}

/// An idempotency key with the fingerprint of the request it protects.
///
/// Keys are scoped to the stream they are used on. The fingerprint decides "same request":
/// callers that have a request body (the HTTP API) pass a hash of it; otherwise
/// [`Idempotency::for_events`] hashes the event types and payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// Hash of the request.
    pub fingerprint: String,
}

impl Idempotency {
    /// A key with an explicit request fingerprint.
    pub fn new(key: impl Into<String>, fingerprint: impl Into<String>) -> Self {
        Idempotency {
            key: key.into(),
            fingerprint: fingerprint.into(),
        }
    }

    /// A key whose fingerprint is the SHA-256 of the events' types, schemas and payloads.
    pub fn for_events(key: impl Into<String>, events: &[NewEvent]) -> Self {
        let mut h = Sha256::new();
        for e in events {
            h.update(e.event_type.as_bytes());
            h.update([0]);
            h.update(e.schema.to_le_bytes());
            h.update(e.data.get().as_bytes());
            h.update([0]);
        }
        Idempotency::new(key, hex::encode(&h.finalize()[..16]))
    }
}

/// One atomic append of one or more events to one stream.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Target stream.
    pub stream: String,
    /// Version check.
    pub expected: ExpectedVersion,
    /// Events, in order; all or none are stored.
    pub events: Vec<NewEvent>,
    /// Optional idempotency key.
    pub idempotency: Option<Idempotency>,
    /// Queue index changes applied atomically with the events ([`crate::queue`]).
    pub queue: Vec<crate::queue::QueueOp>,
}

impl AppendRequest {
    /// An append without idempotency key.
    pub fn new(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        AppendRequest {
            stream: stream.into(),
            expected,
            events,
            idempotency: None,
            queue: Vec::new(),
        }
    }

    /// Attaches queue index changes.
    pub fn with_queue(mut self, ops: Vec<crate::queue::QueueOp>) -> Self {
        self.queue = ops;
        self
    }

    /// Attaches an idempotency key.
    pub fn with_idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = Some(idempotency);
        self
    }
}

/// The outcome of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// Stream appended to.
    pub stream: String,
    /// Version of the first event written.
    pub first_version: u64,
    /// Version of the last event written: the stream's version after the append.
    pub last_version: u64,
    /// Position of each event written, in order.
    pub positions: Vec<Position>,
    /// True when this is the recorded result of an earlier append with the same key.
    pub replayed: bool,
}

impl AppendResult {
    /// Position of the last event written.
    pub fn last_position(&self) -> Option<Position> {
        self.positions.last().copied()
    }
}

/// Store-wide settings shared by the backends.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Key prefix (`JOBSOURCE_PREFIX`).
    pub prefix: String,
    /// Partition count (`JOBSOURCE_PARTITIONS`).
    pub partitions: u32,
    /// How long idempotency keys are remembered.
    pub idempotency_retention: Duration,
    /// Group commit (Redis): at most this many append commands go out together in one
    /// script call (`JOBSOURCE_GROUP_COMMIT_MAX`); 1 sends each alone.
    pub group_commit_max: usize,
    /// Group commit on one Redis server: the partitions share this many lanes (partition
    /// p in lane p mod lanes), each with one call in flight that carries commands of all
    /// its partitions (`JOBSOURCE_GROUP_COMMIT_LANES`). On Redis Cluster each partition is
    /// its own lane, since a call must stay in one slot.
    pub group_commit_lanes: u32,
}

/// Default [`StoreConfig::group_commit_lanes`]: measured best of 1, 2, 4, 8 and 16 on the
/// 2-core box (BENCHMARKS.md); one lane leaves Redis idle while each answer travels.
pub const DEFAULT_GROUP_COMMIT_LANES: u32 = 4;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            prefix: "jobsource".into(),
            partitions: 16,
            idempotency_retention: Duration::from_secs(24 * 3600),
            group_commit_max: 64,
            group_commit_lanes: DEFAULT_GROUP_COMMIT_LANES,
        }
    }
}

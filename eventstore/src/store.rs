//! The [`EventStore`] trait: the one interface both backends implement.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::append::{AppendRequest, AppendResult};
use crate::envelope::RecordedEvent;
use crate::error::StoreError;
use crate::partition;
use crate::position::{Cursor, LogId, Offset};
use crate::queue::{ClaimSpec, Claimed, LeaseEntry};

/// A live stream of events from a [`EventStore::tail`].
pub type EventStream = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// A partitioned, versioned event store.
///
/// Semantics every backend honours (checked by the shared conformance suite):
/// - appends are atomic per call (all events or none) and check the expected version
///   against the stream's authoritative version counter;
/// - versions are 1-based and contiguous within a stream;
/// - each partition log is totally ordered by [`LogId`], and a stream lives in exactly one
///   partition, so a stream's events appear in its partition log in version order;
/// - an idempotency key seen before returns the original result and appends nothing.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Number of partitions (fixed for the life of the store).
    fn partitions(&self) -> u32;

    /// The partition `stream` lives in.
    fn partition_of(&self, stream: &str) -> u32 {
        partition::partition_of(stream, self.partitions())
    }

    /// Appends events atomically.
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError>;

    /// The recorded result of an earlier append to `stream` with this idempotency key.
    ///
    /// `Ok(None)` when the key is unknown (or expired); `IdempotencyKeyReused` when it was
    /// used with another fingerprint. Callers that decide a command before appending check
    /// this first, so a retried command whose first attempt succeeded gets its original
    /// result instead of being decided again against the state it already changed.
    async fn recall(
        &self,
        stream: &str,
        idempotency: &crate::append::Idempotency,
    ) -> Result<Option<AppendResult>, StoreError>;

    /// Reserves `name` for `value` unless it is already reserved; returns the value that
    /// holds it (the existing one, or `value` when this call won). Reservations live as
    /// long as idempotency keys.
    ///
    /// Idempotency keys are scoped to a stream, but a command that creates an aggregate
    /// allocates the stream's id itself: the API reserves `key -> id` first, so a retried
    /// create targets the same stream and gets the recorded result.
    async fn reserve(&self, name: &str, value: &str) -> Result<String, StoreError>;

    /// Current version of `stream` (0 when it does not exist).
    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError>;

    /// Reads up to `limit` events of `stream` starting at version `from_version` (1-based).
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events of partition `partition` strictly after `after`.
    async fn read_partition(
        &self,
        partition: u32,
        after: LogId,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Number of entries in partition `partition`'s log.
    async fn partition_len(&self, partition: u32) -> Result<u64, StoreError>;

    /// The last log id of every partition (`0-0` for an empty one).
    async fn head(&self) -> Result<Cursor, StoreError>;

    /// Resolves an offset into a cursor (`end` is resolved against the current head).
    async fn resolve(&self, offset: &Offset) -> Result<Cursor, StoreError> {
        let p = self.partitions();
        match offset {
            Offset::Start => Ok(Cursor::start(p)),
            Offset::End => self.head().await,
            Offset::Timestamp(t) => {
                let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
                Ok(Cursor::from_ids(vec![
                    LogId::just_before_ms(ms);
                    p as usize
                ]))
            }
            Offset::Positions(ps) => {
                let mut cursor = Cursor::start(p);
                for pos in ps {
                    if pos.partition >= p {
                        return Err(StoreError::Invalid(format!(
                            "position {pos} names partition {} but the store has {p} partitions",
                            pos.partition
                        )));
                    }
                    cursor.advance(*pos);
                }
                Ok(cursor)
            }
        }
    }

    /// Follows every partition from `from`, yielding events as they are appended.
    ///
    /// Within a partition, events arrive in log order. The stream ends only when dropped.
    async fn tail(&self, from: Cursor) -> Result<EventStream, StoreError>;

    /// Claims the best ready job of `partition` that `spec`'s worker can run, appending its
    /// assignment (built from the template) and starting its lease in one atomic step.
    /// Due delayed jobs of the partition become ready first. `Ok(None)`: nothing fits.
    async fn claim(&self, partition: u32, spec: &ClaimSpec) -> Result<Option<Claimed>, StoreError>;

    /// Renews `stream`'s lease to `now_ms` + its length if `worker_id` holds it; the new
    /// deadline, or `None` when that worker holds no lease on it.
    async fn renew_lease(
        &self,
        stream: &str,
        worker_id: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// The lease on `stream`, if one is held.
    async fn lease(&self, stream: &str) -> Result<Option<LeaseEntry>, StoreError>;

    /// Up to `limit` leases of `partition` whose deadline is at or before `now_ms`.
    async fn due_leases(
        &self,
        partition: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<LeaseEntry>, StoreError>;

    /// Every lease held by a worker on `machine_id` (all partitions).
    async fn leases_of_machine(&self, machine_id: &str) -> Result<Vec<LeaseEntry>, StoreError>;

    /// Per partition: whether a claim there could find work at `now_ms` (a ready queue is
    /// non-empty or a delayed job is due). One round trip; used to wake waiting claims.
    async fn ready_hint(&self, now_ms: u64) -> Result<Vec<bool>, StoreError>;

    /// Reads a whole stream (convenience over [`EventStore::read_stream`]).
    async fn read_stream_all(&self, stream: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        loop {
            let batch = self.read_stream(stream, out.len() as u64 + 1, 1000).await?;
            let n = batch.len();
            out.extend(batch);
            if n < 1000 {
                return Ok(out);
            }
        }
    }
}

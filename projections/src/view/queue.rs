//! What the claim queue reads from the hot model: pending entries in claim order and the
//! sizes of the queue structures.

use uuid::Uuid;

/// A pending job as the claim queue orders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingEntry {
    /// Priority (claims take the highest first).
    pub priority: u8,
    /// Job id (UUID v7: FIFO within a priority).
    pub job_id: Uuid,
}

/// Sizes of the hot model's queue structures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Pending jobs.
    pub pending: u64,
    /// Assigned or running jobs.
    pub assigned: u64,
    /// Completed jobs.
    pub completed: u64,
    /// Failed jobs.
    pub failed: u64,
}

//! Which backend errors are outages (503, waited out) rather than faults: one rule for the
//! command layer's and the query layer's errors.

/// A Redis error that means the server cannot be reached right now.
pub(crate) fn redis(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// A PostgreSQL error that means the database cannot be reached right now.
pub(crate) fn postgres(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

//! Machine commands: registration, heartbeats and the timeout, through the same
//! load-decide-append path as jobs ([`Service::execute`]).
//!
//! Besides the log, a machine has a last-seen time ([`seen::SeenStore`]): every
//! registration and heartbeat records it, including heartbeats that change nothing (and so
//! write no event). The timeout sweeper ([`sweeper::Sweeper`]) marks machines not seen
//! for too long offline.
//!
//! Order within a heartbeat: the request is validated first (bad input changes nothing,
//! not even the last-seen time), then the machine must exist (404 otherwise), then the
//! time is recorded and the heartbeat decided. Recording the time before deciding means
//! that a sweeper racing with the heartbeat either sees the fresh time and leaves the
//! machine alone, or marks it offline first, in which case the heartbeat (deciding
//! against the offline state) brings it back online at once.

pub mod seen;
pub mod sweeper;

use chrono::{DateTime, Utc};
use jobsource_domain::machine::{Heartbeat, Machine, MachineCommand, RegisterMachine};
use jobsource_domain::{machine_stream, validate, DomainError};

use super::{CommandContext, Outcome, Service, ServiceError};
pub use seen::{MemorySeenStore, RedisSeenStore, SeenStore};

/// A 422 on `machine_id` unless `id` is a valid machine id.
pub fn check_machine_id(id: &str) -> Result<(), ServiceError> {
    if validate::is_valid_machine_id(id) {
        Ok(())
    } else {
        Err(ServiceError::validation(
            "machine_id",
            validate::machine_id_message(id),
        ))
    }
}

/// Registers machine `register.machine_id` (again: see [`RegisterMachine`]) and records it
/// as seen at `now`.
pub async fn register(
    service: &Service,
    seen: &dyn SeenStore,
    register: RegisterMachine,
    ctx: &CommandContext,
    now: DateTime<Utc>,
) -> Result<Outcome<Machine>, ServiceError> {
    check_machine_id(&register.machine_id)?;
    let stream = machine_stream(&register.machine_id);
    let id = register.machine_id.clone();
    let outcome = service
        .execute::<Machine>(&stream, MachineCommand::Register(register), false, ctx)
        .await?;
    seen.touch(&id, now.timestamp_millis()).await?;
    Ok(outcome)
}

/// A heartbeat of machine `id` at `now`; returns the outcome and the last-seen time now
/// recorded (milliseconds).
pub async fn heartbeat(
    service: &Service,
    seen: &dyn SeenStore,
    id: &str,
    heartbeat: Heartbeat,
    ctx: &CommandContext,
    now: DateTime<Utc>,
) -> Result<(Outcome<Machine>, i64), ServiceError> {
    check_machine_id(id)?;
    heartbeat.validate()?;
    let stream = machine_stream(id);
    if service.store().stream_version(&stream).await? == 0 {
        return Err(DomainError::NotFound { kind: "machine" }.into());
    }
    let seen_ms = seen.touch(id, now.timestamp_millis()).await?;
    let outcome = service
        .execute::<Machine>(&stream, MachineCommand::Heartbeat(heartbeat), false, ctx)
        .await?;
    Ok((outcome, seen_ms))
}

/// Folds machine `id` from its history (the consistent, current state; `status: None`
/// when it was never registered).
pub async fn load_machine(service: &Service, id: &str) -> Result<Machine, ServiceError> {
    Ok(service.load::<Machine>(&machine_stream(id)).await?.0)
}

/// Milliseconds since the epoch as a time (`None` when out of range).
pub fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

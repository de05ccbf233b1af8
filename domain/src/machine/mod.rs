//! The `Machine` aggregate: a registered host running workers, its status and the last
//! status each of its workers reported.
//!
//! A machine registers, then heartbeats. A heartbeat is decided into events only when it
//! changes something (a status, a worker's status or current job); the time of the last
//! heartbeat is kept outside the log by the caller. The timeout sweeper marks a machine
//! that stopped heartbeating offline with [`MachineCommand::MarkOffline`].

mod command;
mod event;
mod state;

pub use command::{
    Heartbeat, MachineCommand, MarkOffline, RegisterMachine, WorkerReport, MAX_CAPABILITIES,
    MAX_GPU_MEMORY, MAX_WORKERS,
};
pub use event::MachineEvent;
pub use state::{Machine, MachineStatus, WorkerState, WorkerStatus};

#[cfg(test)]
mod tests;

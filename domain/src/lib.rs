//! jobsource domain: the `Job`, `Workflow` and `Machine` aggregates, their commands, events
//! and errors.
//!
//! Pure and synchronous: a command is decided against the current state into events or a
//! typed error (`decide`), and state is the fold of events (`apply`). No I/O, no clock, no
//! randomness: ids are passed in by the caller, times live in the event envelope.

pub mod error;
pub mod job;
pub mod machine;
pub mod validate;
pub mod workflow;

#[cfg(test)]
mod testing;

pub use error::{DomainError, FieldError};

use uuid::Uuid;

/// Stream name of a job: `job-<uuid>`.
pub fn job_stream(id: Uuid) -> String {
    format!("job-{id}")
}

/// Stream name of a workflow: `workflow-<uuid>`.
pub fn workflow_stream(id: Uuid) -> String {
    format!("workflow-{id}")
}

/// Stream name of a machine: `machine-<id>` (ids match
/// `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`, see [`validate::is_valid_machine_id`]).
pub fn machine_stream(id: &str) -> String {
    format!("machine-{id}")
}

/// The shape every aggregate shares: state folded from events, commands decided into events.
pub trait Aggregate: Default + Clone {
    /// Command type.
    type Command;
    /// Event type.
    type Event;
    /// `job`, `workflow` or `machine`.
    const KIND: &'static str;
    /// Applies one event.
    fn apply(&mut self, event: &Self::Event);
    /// Decides a command against the current state.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError>;
    /// Number of events applied.
    fn version(&self) -> u64;
}

impl Aggregate for job::Job {
    type Command = job::JobCommand;
    type Event = job::JobEvent;
    const KIND: &'static str = "job";
    fn apply(&mut self, event: &Self::Event) {
        job::Job::apply(self, event)
    }
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError> {
        job::Job::decide(self, command)
    }
    fn version(&self) -> u64 {
        self.version
    }
}

impl Aggregate for workflow::Workflow {
    type Command = workflow::WorkflowCommand;
    type Event = workflow::WorkflowEvent;
    const KIND: &'static str = "workflow";
    fn apply(&mut self, event: &Self::Event) {
        workflow::Workflow::apply(self, event)
    }
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError> {
        workflow::Workflow::decide(self, command)
    }
    fn version(&self) -> u64 {
        self.version
    }
}

impl Aggregate for machine::Machine {
    type Command = machine::MachineCommand;
    type Event = machine::MachineEvent;
    const KIND: &'static str = "machine";
    fn apply(&mut self, event: &Self::Event) {
        machine::Machine::apply(self, event)
    }
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError> {
        machine::Machine::decide(self, command)
    }
    fn version(&self) -> u64 {
        self.version
    }
}

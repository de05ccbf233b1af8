//! jobsource domain: the `Job` and `Workflow` aggregates, their commands, events and errors.
//!
//! Pure and synchronous: a command is decided against the current state into events or a
//! typed error (`decide`), and state is the fold of events (`apply`). No I/O, no clock, no
//! randomness: ids are passed in by the caller, times live in the event envelope.

pub mod error;
pub mod job;
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

/// The shape both aggregates share: state folded from events, commands decided into events.
pub trait Aggregate: Default + Clone {
    /// Command type.
    type Command;
    /// Event type.
    type Event;
    /// `job` or `workflow`.
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

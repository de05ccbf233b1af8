//! The `Workflow` aggregate: an ordered set of steps (one job each) forming a DAG.

mod command;
mod event;
mod state;

pub use command::{CreateWorkflow, StepSpec, WorkflowCommand, MAX_STEPS};
pub use event::{StepDetail, WorkflowCreated, WorkflowEvent};
pub use state::{StepStatus, Workflow, WorkflowStatus};

#[cfg(test)]
mod tests;

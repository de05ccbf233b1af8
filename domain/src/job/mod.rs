//! The `Job` aggregate: one unit of work from submission to a terminal status.

mod command;
mod event;
mod state;

pub use command::{
    AssignJob, CancelJob, CompleteJob, ExpireLease, FailJob, JobCommand, ReportProgress, SubmitJob,
};
pub use event::{JobError, JobEvent, JobSubmitted, Requirements};
pub use state::{Job, JobStatus, LEASE_EXPIRED};

#[cfg(test)]
mod tests;

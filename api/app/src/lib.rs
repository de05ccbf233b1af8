//! jobsource's application layer: the command/query layer ([`service`]) and the read
//! side ([`read`]), orchestration of workflows ([`orchestrator`]), webhook planning and
//! delivery ([`webhooks`]), the job-type [`catalog`], the [`live`] feed behind `/ws`, the
//! seed message-bus bridge ([`seed_bus`]) and the [`metrics`] names.
//!
//! Nothing here knows HTTP: `jobsource-http` turns these calls and their errors into
//! routes and responses, and the `jobsource` binary wires both together.

pub mod catalog;
pub mod consumers;
pub mod live;
pub mod metrics;
pub mod orchestrator;
mod outage;
pub mod read;
pub mod seed_bus;
pub mod service;
pub mod status;
pub mod webhooks;

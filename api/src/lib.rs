//! jobsource API crate: the command/query layer, the HTTP surfaces, orchestration, and
//! the `jobsource` binary's commands (serve, benchmarks, migrate, projections, events).

pub mod background;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod http;
pub mod live;
pub mod metrics;
pub mod orchestrator;
pub mod read;
pub mod seed_bus;
pub mod serve;
pub mod service;
pub mod status;
pub mod webhooks;

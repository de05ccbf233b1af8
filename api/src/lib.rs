//! The `jobsource` binary's library: its commands (serve, benchmarks, migrate,
//! projections, events). [`serve`] wires `jobsource-app` (command/query layer,
//! orchestration, webhooks, live feed) to `jobsource-http` (the routes).

pub mod bench;
pub mod cli;
pub mod serve;

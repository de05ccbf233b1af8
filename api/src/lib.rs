//! jobsource API crate: the `jobsource` binary's commands (benchmarks, migrate,
//! projections, events).

pub mod bench;
pub mod cli;

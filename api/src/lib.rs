//! jobsource API crate: the `jobsource` binary's commands (for now the benchmarks).

pub mod bench;

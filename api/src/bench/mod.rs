//! `jobsource bench ...`: load generators that print a table and, as the last line, JSON.

pub mod append;
pub mod ceiling;
pub mod rebuild;
pub mod report;

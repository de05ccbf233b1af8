//! Driving aggregates in tests: decide each command against the folded state and append
//! the resulting events with `Exact(version)`, as a command handler would.

use jobsource_domain::Aggregate;
use jobsource_eventstore::typed::{to_new_event, EventPayload};
use jobsource_eventstore::{AppendRequest, EventStore, ExpectedVersion};

/// Runs `commands` in order on a new aggregate stored at `stream`; returns the final state.
/// Panics when a command is rejected or an append fails (a broken test setup).
pub async fn run_commands<A>(store: &dyn EventStore, stream: &str, commands: Vec<A::Command>) -> A
where
    A: Aggregate,
    A::Event: EventPayload,
    A::Command: std::fmt::Debug,
{
    let mut state = A::default();
    for c in commands {
        let events = state
            .decide(&c)
            .unwrap_or_else(|e| panic!("command {c:?} rejected: {e}"));
        let new = events.iter().map(to_new_event).collect();
        store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::Exact(state.version()),
                new,
            ))
            .await
            .expect("append");
        for e in &events {
            state.apply(e);
        }
    }
    state
}

//! Given/when/then for aggregates (in the style of cqrs-es' test framework):
//! `given(events).when(command).then(events)` or `.then_err(...)`.

use std::fmt::Debug;

use crate::{Aggregate, DomainError};

/// A test in progress: the state built from the given events.
pub struct Given<A: Aggregate> {
    state: A,
}

/// Starts a test from these past events.
pub fn given<A: Aggregate>(events: Vec<A::Event>) -> Given<A> {
    let mut state = A::default();
    for e in &events {
        state.apply(e);
    }
    Given { state }
}

/// The outcome of `when`.
pub struct When<A: Aggregate> {
    result: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the given state.
    pub fn when(self, command: A::Command) -> When<A> {
        When {
            result: self.state.decide(&command),
        }
    }
}

impl<A: Aggregate> When<A>
where
    A::Event: Debug + PartialEq,
{
    /// Asserts the command produced exactly these events.
    pub fn then(self, expected: Vec<A::Event>) {
        match self.result {
            Ok(events) => assert_eq!(events, expected),
            Err(e) => panic!("expected events {expected:?}, got error {e:?}"),
        }
    }

    /// Asserts the command was rejected with exactly this error.
    pub fn then_err(self, expected: DomainError) {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }

    /// Asserts the command was rejected with a validation error on `field`.
    pub fn then_invalid_field(self, field: &str) {
        match self.result {
            Err(DomainError::Validation(errors)) => assert!(
                errors.iter().any(|e| e.field == field),
                "expected a validation error on {field}, got {errors:?}"
            ),
            other => panic!("expected a validation error on {field}, got {other:?}"),
        }
    }
}

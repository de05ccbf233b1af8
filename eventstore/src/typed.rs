//! Bridge between typed domain events and stored envelopes.
//!
//! Domain event enums serialize adjacently tagged (`{"type": "...", "data": {...}}`), so
//! the envelope's `type` and `data` are exactly the two halves of that form; this module
//! splits and rejoins them without knowing the individual events.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::envelope::{Envelope, NewEvent};
use crate::error::DecodeError;

/// A typed event that can be stored: its type name and current payload schema.
pub trait EventPayload: Serialize + DeserializeOwned {
    /// The envelope `type`, e.g. `job_assigned`.
    fn event_type(&self) -> &'static str;
    /// The current schema version of this event's payload.
    fn schema(&self) -> u32;
}

impl EventPayload for jobsource_domain::job::JobEvent {
    fn event_type(&self) -> &'static str {
        jobsource_domain::job::JobEvent::event_type(self)
    }
    fn schema(&self) -> u32 {
        jobsource_domain::job::JobEvent::schema(self)
    }
}

impl EventPayload for jobsource_domain::workflow::WorkflowEvent {
    fn event_type(&self) -> &'static str {
        jobsource_domain::workflow::WorkflowEvent::event_type(self)
    }
    fn schema(&self) -> u32 {
        jobsource_domain::workflow::WorkflowEvent::schema(self)
    }
}

impl EventPayload for jobsource_domain::machine::MachineEvent {
    fn event_type(&self) -> &'static str {
        jobsource_domain::machine::MachineEvent::event_type(self)
    }
    fn schema(&self) -> u32 {
        jobsource_domain::machine::MachineEvent::schema(self)
    }
}

/// Turns a typed event into a [`NewEvent`] (fresh event id, stamped now).
pub fn to_new_event<E: EventPayload>(event: &E) -> NewEvent {
    let data = match serde_json::to_value(event) {
        Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
        // Unit-like variants serialize without data.
        _ => Value::Null,
    };
    NewEvent::new(event.event_type(), event.schema(), data)
}

/// Reads the typed event out of an (already upcast) envelope.
pub fn from_envelope<E: EventPayload>(envelope: &Envelope) -> Result<E, DecodeError> {
    let mut tagged = serde_json::Map::with_capacity(2);
    tagged.insert("type".into(), Value::from(envelope.event_type.clone()));
    tagged.insert("data".into(), envelope.data.clone());
    serde_json::from_value(Value::Object(tagged)).map_err(|e| DecodeError {
        at: format!("{}@{}", envelope.stream, envelope.version),
        message: format!(
            "{} payload does not match its type: {e}",
            envelope.event_type
        ),
    })
}

/// [`from_envelope`] for job events.
pub fn job_event_from(envelope: &Envelope) -> Result<jobsource_domain::job::JobEvent, DecodeError> {
    from_envelope(envelope)
}

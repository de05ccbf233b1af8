//! Bridge between typed domain events and stored envelopes.
//!
//! Domain event enums serialize adjacently tagged (`{"type": "...", "data": {...}}`), so
//! the envelope's `type` and `data` are exactly the two halves of that form; this module
//! splits and rejoins them without knowing the individual events.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Serialize;

use crate::envelope::{Envelope, NewEvent};
use crate::error::DecodeError;
use crate::payload::Payload;

mod content;

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
///
/// Only the event's `data` half is written, once, straight to text: no JSON tree is built.
pub fn to_new_event<E: EventPayload>(event: &E) -> NewEvent {
    // Every event enum is adjacently tagged, so the picker cannot refuse one; `null` is the
    // payload of a variant without data.
    let data = content::data_json(event)
        .map(Payload::from)
        .unwrap_or_default();
    NewEvent::new(event.event_type(), event.schema(), data)
}

/// Reads the typed event out of an (already upcast) envelope.
///
/// The payload is read in place (the envelope's `type` and `data` are presented to the
/// event's deserializer as the two fields of its tagged form), so no copy of the JSON tree
/// is made per event.
pub fn from_envelope<E: EventPayload>(envelope: &Envelope) -> Result<E, DecodeError> {
    E::deserialize(Tagged {
        event_type: &envelope.event_type,
        data: &envelope.data,
    })
    .map_err(|e| DecodeError {
        at: format!("{}@{}", envelope.stream, envelope.version),
        message: format!(
            "{} payload does not match its type: {e}",
            envelope.event_type
        ),
    })
}

/// `{"type": event_type, "data": data}` as a deserializer, borrowing both.
struct Tagged<'a> {
    event_type: &'a str,
    data: &'a Payload,
}

impl<'de> Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(TaggedFields {
            tagged: self,
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// The two fields of [`Tagged`], in order.
struct TaggedFields<'a> {
    tagged: Tagged<'a>,
    next: u8,
}

impl<'de> MapAccess<'de> for TaggedFields<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.next {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.next += 1;
        if self.next == 1 {
            seed.deserialize(BorrowedStrDeserializer::new(self.tagged.event_type))
        } else {
            // The payload's text is parsed straight into the event's fields.
            seed.deserialize(&mut serde_json::Deserializer::from_str(
                self.tagged.data.get(),
            ))
        }
    }
}

/// [`from_envelope`] for job events.
pub fn job_event_from(envelope: &Envelope) -> Result<jobsource_domain::job::JobEvent, DecodeError> {
    from_envelope(envelope)
}

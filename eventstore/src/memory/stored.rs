//! How the in-memory store keeps one event: compactly, since embedded mode holds every
//! event of the log in the heap.
//!
//! An [`Envelope`] owns its stream name, type and correlation id as separate strings; kept
//! per event they cost ~100 bytes on top of the payload, and on this workload's 1 M events
//! most of an append's time went to the kernel zeroing fresh pages for them. So the stored
//! form shares the stream name (one per stream) and the event type (one per type), leaves
//! the correlation id out when it is the default (the event id) and the metadata when it is
//! empty; the payload is already shared text ([`crate::Payload`]). A read builds the full
//! envelope back, which costs what the clone of a stored envelope cost before.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::{Envelope, NewEvent};
use crate::payload::Payload;

/// One stored event.
pub(super) struct Stored {
    event_id: Uuid,
    version: u64,
    occurred_at: DateTime<Utc>,
    schema: u32,
    stream: Arc<str>,
    event_type: Arc<str>,
    /// `None`: the event id (the default correlation).
    correlation_id: Option<Box<str>>,
    causation_id: Option<Box<str>>,
    /// `None`: no metadata.
    metadata: Option<Box<Map<String, Value>>>,
    data: Payload,
}

/// The event types seen so far, each kept once (a store sees a few dozen).
#[derive(Default)]
pub(super) struct Types(Vec<Arc<str>>);

impl Types {
    /// The shared copy of `name`.
    pub(super) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.0.iter().find(|t| &***t == name) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(name);
        self.0.push(t.clone());
        t
    }
}

fn boxed_metadata(metadata: Map<String, Value>) -> Option<Box<Map<String, Value>>> {
    (!metadata.is_empty()).then(|| Box::new(metadata))
}

impl Stored {
    /// `event` stored at `stream`/`version`.
    pub(super) fn new(
        event: NewEvent,
        stream: Arc<str>,
        event_type: Arc<str>,
        version: u64,
    ) -> Self {
        Stored {
            event_id: event.event_id,
            version,
            occurred_at: event.occurred_at,
            schema: event.schema,
            stream,
            event_type,
            correlation_id: event.correlation_id.map(String::into_boxed_str),
            causation_id: event.causation_id.map(String::into_boxed_str),
            metadata: boxed_metadata(event.metadata),
            data: event.data,
        }
    }

    /// A complete envelope (e.g. one a claim decoded) stored at its own stream/version.
    pub(super) fn from_envelope(env: Envelope, stream: Arc<str>, event_type: Arc<str>) -> Self {
        Stored {
            event_id: env.event_id,
            version: env.version,
            occurred_at: env.occurred_at,
            schema: env.schema,
            stream,
            event_type,
            correlation_id: Some(env.correlation_id.into_boxed_str()),
            causation_id: env.causation_id.map(String::into_boxed_str),
            metadata: boxed_metadata(env.metadata),
            data: env.data,
        }
    }

    /// The full envelope, as stored (not upcast).
    pub(super) fn envelope(&self) -> Envelope {
        Envelope {
            event_id: self.event_id,
            stream: self.stream.to_string(),
            version: self.version,
            event_type: self.event_type.to_string(),
            schema: self.schema,
            occurred_at: self.occurred_at,
            correlation_id: self
                .correlation_id
                .as_deref()
                .map_or_else(|| self.event_id.to_string(), str::to_owned),
            causation_id: self.causation_id.as_deref().map(str::to_owned),
            metadata: self.metadata.as_deref().cloned().unwrap_or_default(),
            data: self.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_compact_form_gives_back_the_same_envelope() {
        let mut types = Types::default();
        let stream: Arc<str> = Arc::from("job-1");
        let plain = NewEvent::new("job_progress", 1, json!({"progress": 5}));
        let want = plain.to_envelope("job-1", 3);
        let got = Stored::new(plain, stream.clone(), types.intern("job_progress"), 3).envelope();
        assert_eq!(got, want);

        let rich = NewEvent::new("job_progress", 1, json!({"progress": 6}))
            .with_correlation("corr")
            .with_causation("cause")
            .with_meta("actor", "me");
        let want = rich.to_envelope("job-1", 4);
        let got = Stored::new(rich, stream.clone(), types.intern("job_progress"), 4).envelope();
        assert_eq!(got, want);
        let again = Stored::from_envelope(want.clone(), stream, types.intern("job_progress"));
        assert_eq!(again.envelope(), want);
        assert_eq!(types.0.len(), 1, "one shared copy per event type");
    }
}

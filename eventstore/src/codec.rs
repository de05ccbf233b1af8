//! Envelope codec: JSON encoding for the logs and decoding with upcasting.
//!
//! Appends are decided server-side (the version is only known inside the atomic call), so
//! an envelope is encoded as two halves around the version number: the Redis script
//! concatenates `head .. version .. tail`. The result is byte-for-byte what serde would
//! produce for the whole [`Envelope`].

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::{Envelope, NewEvent};
use crate::error::DecodeError;
use crate::payload::Payload;
use crate::upcast;

/// The two halves of an encoded envelope; the version goes between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitEnvelope {
    /// `{"event_id":"..","stream":"..","version":`
    pub head: String,
    /// `,"type":..,...,"data":..}`
    pub tail: String,
}

impl SplitEnvelope {
    /// Joins the halves with a version.
    pub fn join(&self, version: u64) -> String {
        let mut s = String::with_capacity(self.head.len() + self.tail.len() + 20);
        s.push_str(&self.head);
        s.push_str(&version.to_string());
        s.push_str(&self.tail);
        s
    }
}

#[derive(Serialize)]
struct Head<'a> {
    event_id: &'a Uuid,
    stream: &'a str,
}

#[derive(Serialize)]
struct Tail<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    schema: u32,
    occurred_at: String,
    correlation_id: &'a str,
    causation_id: &'a Option<String>,
    metadata: &'a Map<String, Value>,
    data: &'a Payload,
}

/// Encodes `event` for `stream`, leaving the version open.
pub fn encode_split(stream: &str, event: &NewEvent) -> SplitEnvelope {
    let head = Head {
        event_id: &event.event_id,
        stream,
    };
    let event_id = event.event_id.to_string();
    let tail = Tail {
        event_type: &event.event_type,
        schema: event.schema,
        occurred_at: event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        correlation_id: event.correlation_id.as_deref().unwrap_or(&event_id),
        causation_id: &event.causation_id,
        metadata: &event.metadata,
        data: &event.data,
    };
    // Serializing these plain structs cannot fail: all keys are strings, values are JSON.
    let mut head = serde_json::to_string(&head).unwrap_or_default();
    head.pop(); // drop the closing brace
    head.push_str(",\"version\":");
    let tail_json = serde_json::to_string(&tail).unwrap_or_default();
    let mut tail = String::with_capacity(tail_json.len() + 1);
    tail.push(',');
    tail.push_str(&tail_json[1..]);
    SplitEnvelope { head, tail }
}

/// Encodes a complete envelope (used by the in-memory backend and tests).
pub fn encode(envelope: &Envelope) -> String {
    serde_json::to_string(envelope).unwrap_or_default()
}

/// Decodes an envelope and upcasts its payload to the current schema.
///
/// `at` names the entry (position or stream@version) for the error message.
pub fn decode(json: &[u8], at: &dyn std::fmt::Display) -> Result<Envelope, DecodeError> {
    let envelope: Envelope = serde_json::from_slice(json).map_err(|e| DecodeError {
        at: at.to_string(),
        message: e.to_string(),
    })?;
    upcast::upcast(envelope).map_err(|message| DecodeError {
        at: at.to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_encoding_equals_whole_encoding() {
        let ev = NewEvent::new("job_progress", 1, json!({"progress": 40, "note": "a\"b"}))
            .with_correlation("corr-1")
            .with_meta("actor", "tester");
        let split = encode_split("job-1", &ev);
        let joined = split.join(7);
        let whole = encode(&ev.to_envelope("job-1", 7));
        assert_eq!(joined, whole);
        let back = decode(joined.as_bytes(), &"test").unwrap();
        assert_eq!(back, ev.to_envelope("job-1", 7));
    }

    #[test]
    fn corrupt_json_is_a_typed_error() {
        let err = decode(b"{not json", &"3@1-0").unwrap_err();
        assert_eq!(err.at, "3@1-0");
        let err = decode(br#"{"event_id":"x"}"#, &"3@1-0").unwrap_err();
        assert!(err.message.contains("event_id") || err.message.contains("UUID"));
    }
}

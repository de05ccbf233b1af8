//! The event envelope (SPEC section 3) and the shapes around it.
//!
//! [`NewEvent`] is what a caller appends (type, schema, payload, tracing ids);
//! the store assigns the stream and version and returns [`RecordedEvent`]s, which pair the
//! stored [`Envelope`] with its [`Position`] in the global order.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::payload::Payload;
use crate::position::Position;

/// A stored event exactly as serialized in the logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id (UUID v7).
    pub event_id: Uuid,
    /// Stream (aggregate) name, e.g. `job-<uuid>`.
    pub stream: String,
    /// 1-based, contiguous within the stream.
    pub version: u64,
    /// Event type, e.g. `job_assigned`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data` (after upcasting: the current one).
    pub schema: u32,
    /// When the event was appended (millisecond precision, UTC).
    #[serde(with = "millis")]
    pub occurred_at: DateTime<Utc>,
    /// Id shared by everything one request caused.
    pub correlation_id: String,
    /// Id of the event or request that caused this one.
    pub causation_id: Option<String>,
    /// Free-form metadata (`actor`, `request_id`, ...).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The event payload (raw JSON text, see [`Payload`]).
    pub data: Payload,
}

/// An event read back from the store, with its global position.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Where the event sits in its partition log.
    pub position: Position,
    /// The (upcast) envelope.
    pub envelope: Envelope,
}

/// An event to append. The store fills in stream and version.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Pre-allocated id (UUID v7).
    pub event_id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema: u32,
    /// Payload.
    pub data: Payload,
    /// Time of the event, millisecond precision.
    pub occurred_at: DateTime<Utc>,
    /// Correlation id; defaults to the event id when not set.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// Metadata.
    pub metadata: Map<String, Value>,
}

impl NewEvent {
    /// A new event of `event_type` with payload `data` in schema `schema`, stamped now.
    pub fn new(event_type: impl Into<String>, schema: u32, data: impl Into<Payload>) -> Self {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema,
            data: data.into(),
            occurred_at: Utc::now().trunc_subsecs(3),
            correlation_id: None,
            causation_id: None,
            metadata: Map::new(),
        }
    }

    /// Sets the correlation id.
    pub fn with_correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn with_causation(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Adds one metadata entry.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Consumes the event into its envelope at `stream`/`version` (no copies of the payload).
    pub fn into_envelope(self, stream: &str, version: u64) -> Envelope {
        let correlation_id = self
            .correlation_id
            .unwrap_or_else(|| self.event_id.to_string());
        Envelope {
            event_id: self.event_id,
            stream: stream.to_owned(),
            version,
            event_type: self.event_type,
            schema: self.schema,
            occurred_at: self.occurred_at,
            correlation_id,
            causation_id: self.causation_id,
            metadata: self.metadata,
            data: self.data,
        }
    }

    /// The envelope this event becomes at `stream`/`version`.
    pub fn to_envelope(&self, stream: &str, version: u64) -> Envelope {
        Envelope {
            event_id: self.event_id,
            stream: stream.to_owned(),
            version,
            event_type: self.event_type.clone(),
            schema: self.schema,
            occurred_at: self.occurred_at,
            correlation_id: self
                .correlation_id
                .clone()
                .unwrap_or_else(|| self.event_id.to_string()),
            causation_id: self.causation_id.clone(),
            metadata: self.metadata.clone(),
            data: self.data.clone(),
        }
    }
}

/// RFC 3339 with milliseconds and `Z`, as in the SPEC's example envelope.
mod millis {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

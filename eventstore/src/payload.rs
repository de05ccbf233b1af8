//! The event payload (`data`) kept as raw JSON text.
//!
//! An envelope's payload used to be a `serde_json::Value` tree: every append built one
//! (one allocation per key and string, an 11-slot B-tree node per object), every read
//! parsed the stored text into one, and every consumer then walked it again into its typed
//! event. Most readers never need the tree: the typed readers deserialize straight from the
//! text ([`crate::typed::from_envelope`]), the HTTP API and webhooks write it out verbatim.
//! So the payload is the JSON text, validated once when it is parsed, shared by reference
//! count (a clone is a pointer copy), and turned into a tree only where a caller asks for one
//! ([`Payload::to_value`]).

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// Raw JSON text of one event payload; always a complete, valid JSON value.
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// The payload of `value`, written compactly (object keys in `Value`'s sorted order,
    /// so equal trees give equal text).
    pub fn from_value(value: &Value) -> Self {
        // Writing a `Value` out cannot fail: its keys are strings and its numbers finite.
        Self::from_serialize(value).unwrap_or_default()
    }

    /// The payload of any serializable value (e.g. one variant's fields), without building
    /// a tree first.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(|raw| Payload(Arc::from(raw)))
    }

    /// The payload `null`.
    pub fn null() -> Self {
        Payload::default()
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The payload as a raw value (to deserialize from or embed in another document).
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The payload parsed into a tree.
    pub fn to_value(&self) -> Value {
        // The text was valid JSON when this payload was made, so parsing it again succeeds.
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }

    /// One top-level field of an object payload (`None` for other payloads and missing keys).
    pub fn field(&self, name: &str) -> Option<Value> {
        match self.to_value() {
            Value::Object(mut map) => map.remove(name),
            _ => None,
        }
    }

    /// Deserializes the payload into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.get())
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload(Arc::from(RawValue::NULL.to_owned()))
    }
}

impl From<Box<RawValue>> for Payload {
    fn from(raw: Box<RawValue>) -> Self {
        Payload(Arc::from(raw))
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload::from_value(&value)
    }
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Self {
        Payload::from_value(value)
    }
}

impl PartialEq for Payload {
    /// Equal as JSON: the same text, or texts that parse to the same tree (key order and
    /// whitespace do not matter).
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| Payload(Arc::from(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tree_round_trips_through_the_text() {
        let v = json!({"b": [1, 2.5, "x\"y"], "a": {"n": null}});
        let p = Payload::from(v.clone());
        assert_eq!(p.get(), r#"{"a":{"n":null},"b":[1,2.5,"x\"y"]}"#);
        assert_eq!(p.to_value(), v);
        assert_eq!(p, v);
        assert_eq!(p.field("a"), Some(json!({"n": null})));
        assert_eq!(p.field("zz"), None);
    }

    #[test]
    fn equality_is_json_equality() {
        let spaced: Payload = serde_json::from_str(r#"{ "b" : 1, "a" : 2 }"#).unwrap();
        assert_eq!(spaced, Payload::from(json!({"a": 2, "b": 1})));
        assert_ne!(spaced, Payload::from(json!({"a": 2})));
    }

    #[test]
    fn it_is_written_out_verbatim_inside_a_document() {
        let p: Payload = serde_json::from_str(r#"{"z":1,"a":2}"#).unwrap();
        let doc = serde_json::to_string(&json!({"k": 1}).as_object().map(|_| &p)).unwrap();
        assert_eq!(doc, r#"{"z":1,"a":2}"#);
        assert_eq!(Payload::null().get(), "null");
        assert!(serde_json::from_str::<Payload>("{nope").is_err());
    }
}

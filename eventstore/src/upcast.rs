//! Upcasting: readers turn old payload schemas into the current one on read.
//!
//! Stored events are never rewritten. Each [`Upcaster`] lifts one (type, schema) to the
//! next schema; [`upcast`] applies them until none matches, so chains (1 -> 2 -> 3) work.
//!
//! The one real upcaster today: `job_submitted` schema 1, the seed system's layout, kept
//! the job type in `job_type` and prompt/parameters inside `payload`, and had no explicit
//! `status`. Schema 2 (current) has top-level `type`, `prompt`, `parameters`, `status`.

use serde_json::{Map, Value};

use crate::envelope::Envelope;

/// Lifts one event type from one schema to the next.
pub struct Upcaster {
    /// Event type it applies to.
    pub event_type: &'static str,
    /// Schema it reads; it produces `from_schema + 1`.
    pub from_schema: u32,
    /// The payload transformation.
    pub apply: fn(Value) -> Result<Value, String>,
}

/// All registered upcasters.
pub static UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "job_submitted",
    from_schema: 1,
    apply: job_submitted_v1_to_v2,
}];

/// True when some upcaster applies to `envelope` (cheap check before cloning).
pub fn needs_upcast(envelope: &Envelope) -> bool {
    UPCASTERS
        .iter()
        .any(|u| u.event_type == envelope.event_type && u.from_schema == envelope.schema)
}

/// Upcasts `envelope` to the newest schema known for its type.
pub fn upcast(mut envelope: Envelope) -> Result<Envelope, String> {
    while let Some(u) = UPCASTERS
        .iter()
        .find(|u| u.event_type == envelope.event_type && u.from_schema == envelope.schema)
    {
        envelope.data = (u.apply)(envelope.data.to_value())?.into();
        envelope.schema = u.from_schema + 1;
    }
    Ok(envelope)
}

fn job_submitted_v1_to_v2(data: Value) -> Result<Value, String> {
    let Value::Object(mut old) = data else {
        return Err("job_submitted schema 1 payload is not an object".into());
    };
    let job_type = old
        .remove("job_type")
        .ok_or("job_submitted schema 1 payload has no job_type")?;
    let mut new = Map::new();
    new.insert("type".into(), job_type);
    if let Some(Value::Object(mut payload)) = old.remove("payload") {
        new.insert(
            "prompt".into(),
            payload.remove("prompt").unwrap_or(Value::Null),
        );
        new.insert(
            "parameters".into(),
            payload
                .remove("parameters")
                .unwrap_or_else(|| Value::Object(Map::new())),
        );
    }
    let waiting = matches!(old.get("depends_on"), Some(Value::Array(a)) if !a.is_empty());
    new.insert(
        "status".into(),
        Value::from(if waiting { "waiting" } else { "pending" }),
    );
    // Everything else (job_id, priority, requirements, depends_on, ...) kept its name.
    for (k, v) in old {
        new.entry(k).or_insert(v);
    }
    Ok(Value::Object(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::NewEvent;
    use serde_json::json;

    #[test]
    fn job_submitted_schema_1_reads_as_schema_2() {
        let old = NewEvent::new(
            "job_submitted",
            1,
            json!({"job_id": "j1", "job_type": "upscale", "priority": 70,
                   "payload": {"prompt": "a cat", "parameters": {"scale": 4}},
                   "depends_on": []}),
        )
        .to_envelope("job-j1", 1);
        let up = upcast(old).unwrap();
        assert_eq!(up.schema, 2);
        assert_eq!(
            up.data,
            json!({"job_id": "j1", "type": "upscale", "priority": 70, "prompt": "a cat",
                   "parameters": {"scale": 4}, "depends_on": [], "status": "pending"})
        );
    }

    #[test]
    fn current_schemas_pass_through() {
        let e = NewEvent::new("job_submitted", 2, json!({"type": "x"})).to_envelope("s", 1);
        assert_eq!(upcast(e.clone()).unwrap(), e);
    }

    #[test]
    fn broken_old_payload_is_an_error() {
        let e = NewEvent::new("job_submitted", 1, json!({"nope": 1})).to_envelope("s", 1);
        assert!(upcast(e).is_err());
    }
}

//! The seed system's event shape (`packages/core/src/events/types.ts` in the seed
//! documents): one flat JSON object per event with the base fields (`id`, `type`,
//! `timestamp`, `correlation_id`, `causation_id`, `version`, `metadata`), the entity id
//! and the payload fields at top level.
//!
//! Mapping from a jobsource [`Envelope`] (the choices are listed in README.md, "Seed
//! message bus"):
//!
//! - `id` = `event_id`; `type` = the event type; `timestamp` = `occurred_at` in ms;
//!   `correlation_id` as is; `causation_id` only when set (the seed's `JSON.stringify`
//!   drops an undefined one too); `version` = 1, the version of the seed's shape (the
//!   shape is the same whatever jobsource's payload schema);
//! - `metadata` = the envelope's metadata plus `metadata.jobsource` = `{stream,
//!   stream_version, schema, position}`;
//! - the entity id from the stream name: `job-<id>` gives `job_id`, `workflow-<id>`
//!   `workflow_id`, `machine-<id>` `machine_id`;
//! - every payload field at top level, with these renamings and additions:
//!   `job_submitted`: the job type `type` becomes `job_type`, and `payload` =
//!   `{type, prompt, parameters}` as the seed's submit endpoint built it;
//!   `job_assigned`: `assigned_at`; `job_completed`: `duration_ms` becomes `duration` (ms,
//!   0 when not reported) and `completed_at`; `job_failed`: `failed_at`;
//!   `workflow_completed`: `completed_at` and `total_steps` (the number of step details);
//!   `workflow_step_completed`: `total_steps` when the caller knows it. The `*_at`
//!   additions are the event's time in RFC 3339 (ms).
//!
//! Base fields win over payload fields of the same name (only `type` collides, and it is
//! renamed first).

use chrono::SecondsFormat;
use jobsource_eventstore::{Envelope, Position};
use serde_json::{json, Map, Value};

/// The seed's `version` of every published event.
pub const SEED_SHAPE_VERSION: u64 = 1;

/// The entity id key and value of a stream name (`job-<id>` -> (`job_id`, `<id>`)), or
/// `None` for a stream of another category.
pub fn entity_of(stream: &str) -> Option<(&'static str, &str)> {
    [
        ("job-", "job_id"),
        ("workflow-", "workflow_id"),
        ("machine-", "machine_id"),
    ]
    .into_iter()
    .find_map(|(prefix, key)| stream.strip_prefix(prefix).map(|id| (key, id)))
}

/// The seed-shaped message of the event at `position` with envelope `env`.
///
/// `total_steps` is the workflow's step count for `workflow_step_completed` (the seed
/// carries it on every workflow event; jobsource only on `workflow_created`), `None` when
/// unknown (then the field is left out).
pub fn seed_event(env: &Envelope, position: &Position, total_steps: Option<u32>) -> Value {
    let mut out = match env.data.to_value() {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            m
        }
    };
    let at = env.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true);
    match env.event_type.as_str() {
        "job_submitted" => {
            let job_type = out.remove("type").unwrap_or(Value::Null);
            let prompt = out.get("prompt").cloned().unwrap_or(Value::Null);
            let parameters = out.get("parameters").cloned().unwrap_or_else(|| json!({}));
            out.insert(
                "payload".into(),
                json!({"type": job_type, "prompt": prompt, "parameters": parameters}),
            );
            out.insert("job_type".into(), job_type);
        }
        "job_assigned" => {
            out.insert("assigned_at".into(), Value::String(at));
        }
        "job_completed" => {
            let duration = out.remove("duration_ms").filter(|d| !d.is_null());
            out.insert("duration".into(), duration.unwrap_or_else(|| json!(0)));
            out.insert("completed_at".into(), Value::String(at));
        }
        "job_failed" => {
            out.insert("failed_at".into(), Value::String(at));
        }
        "workflow_completed" => {
            let steps = out
                .get("step_details")
                .and_then(Value::as_array)
                .map(|a| a.len())
                .unwrap_or(0);
            out.insert("total_steps".into(), json!(steps));
            out.insert("completed_at".into(), Value::String(at));
        }
        "workflow_step_completed" => {
            if let Some(n) = total_steps {
                out.insert("total_steps".into(), json!(n));
            }
        }
        _ => {}
    }
    if let Some((key, id)) = entity_of(&env.stream) {
        out.entry(key.to_owned())
            .or_insert_with(|| Value::String(id.to_owned()));
    }
    let mut metadata = env.metadata.clone();
    metadata.insert(
        "jobsource".into(),
        json!({
            "stream": env.stream,
            "stream_version": env.version,
            "schema": env.schema,
            "position": position.to_string(),
        }),
    );
    out.insert("id".into(), Value::String(env.event_id.to_string()));
    out.insert("type".into(), Value::String(env.event_type.clone()));
    out.insert(
        "timestamp".into(),
        json!(env.occurred_at.timestamp_millis()),
    );
    out.insert(
        "correlation_id".into(),
        Value::String(env.correlation_id.clone()),
    );
    match &env.causation_id {
        Some(c) => {
            out.insert("causation_id".into(), Value::String(c.clone()));
        }
        None => {
            out.remove("causation_id");
        }
    }
    out.insert("version".into(), json!(SEED_SHAPE_VERSION));
    out.insert("metadata".into(), Value::Object(metadata));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use jobsource_eventstore::LogId;
    use uuid::Uuid;

    use super::*;

    fn env(stream: &str, event_type: &str, data: Value) -> Envelope {
        Envelope {
            event_id: Uuid::nil(),
            stream: stream.into(),
            version: 3,
            event_type: event_type.into(),
            schema: 1,
            occurred_at: Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
            correlation_id: "corr-1".into(),
            causation_id: Some("cause-1".into()),
            metadata: Map::new(),
            data: data.into(),
        }
    }

    fn pos() -> Position {
        Position::new(2, LogId::new(5, 1))
    }

    #[test]
    fn seed_bus_shape_job_submitted() {
        let id = Uuid::new_v4();
        let mut e = env(
            &format!("job-{id}"),
            "job_submitted",
            json!({
                "job_id": id, "type": "text-to-image", "prompt": "a cat",
                "parameters": {"steps": 20}, "priority": 70,
                "requirements": {"capabilities": ["text-to-image"], "gpu_memory": 8.0},
                "webhook_url": null, "workflow_id": null, "step_index": null,
                "depends_on": [], "max_retries": 3, "status": "pending"
            }),
        );
        e.schema = 2;
        e.causation_id = None;
        let m = seed_event(&e, &pos(), None);
        assert_eq!(m["id"], json!(Uuid::nil().to_string()));
        assert_eq!(m["type"], "job_submitted");
        assert_eq!(m["timestamp"], json!(1_700_000_000_123_i64));
        assert_eq!(m["version"], json!(1));
        assert_eq!(m["correlation_id"], "corr-1");
        assert!(m.get("causation_id").is_none());
        assert_eq!(m["job_id"], json!(id.to_string()));
        assert_eq!(m["job_type"], "text-to-image");
        assert_eq!(
            m["payload"],
            json!({"type": "text-to-image", "prompt": "a cat", "parameters": {"steps": 20}})
        );
        assert_eq!(m["priority"], 70);
        assert_eq!(m["requirements"]["capabilities"], json!(["text-to-image"]));
        assert_eq!(m["metadata"]["jobsource"]["schema"], 2);
        assert_eq!(m["metadata"]["jobsource"]["stream_version"], 3);
        assert_eq!(m["metadata"]["jobsource"]["position"], pos().to_string());
    }

    #[test]
    fn seed_bus_shape_job_failed() {
        let id = Uuid::new_v4();
        let e = env(
            &format!("job-{id}"),
            "job_failed",
            json!({
                "job_id": id, "error": {"code": "OOM", "message": "out of memory"},
                "retryable": true, "retry_count": 1, "will_retry": true
            }),
        );
        let m = seed_event(&e, &pos(), None);
        assert_eq!(m["type"], "job_failed");
        assert_eq!(m["job_id"], json!(id.to_string()));
        assert_eq!(
            m["error"],
            json!({"code": "OOM", "message": "out of memory"})
        );
        assert_eq!(m["retry_count"], 1);
        assert_eq!(m["failed_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(m["causation_id"], "cause-1");
    }

    #[test]
    fn seed_bus_shape_job_completed_duration() {
        let id = Uuid::new_v4();
        let e = env(
            &format!("job-{id}"),
            "job_completed",
            json!({"job_id": id, "result": {"ok": true}, "duration_ms": 1500}),
        );
        let m = seed_event(&e, &pos(), None);
        assert_eq!(m["duration"], 1500);
        assert!(m.get("duration_ms").is_none());
        assert_eq!(m["completed_at"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn seed_bus_shape_workflow_completed() {
        let id = Uuid::new_v4();
        let step = |i: u32| {
            json!({"step_index": i, "job_id": Uuid::new_v4(), "status": "completed",
                   "result": {"i": i}, "error": null})
        };
        let e = env(
            &format!("workflow-{id}"),
            "workflow_completed",
            json!({"workflow_id": id, "step_details": [step(0), step(1)],
                   "success_count": 2, "failed_count": 0}),
        );
        let m = seed_event(&e, &pos(), None);
        assert_eq!(m["type"], "workflow_completed");
        assert_eq!(m["workflow_id"], json!(id.to_string()));
        assert_eq!(m["total_steps"], 2);
        assert_eq!(m["success_count"], 2);
        assert_eq!(m["failed_count"], 0);
        assert_eq!(m["step_details"].as_array().map(Vec::len), Some(2));
        assert_eq!(m["completed_at"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn seed_bus_shape_workflow_step_completed_total_steps() {
        let id = Uuid::new_v4();
        let e = env(
            &format!("workflow-{id}"),
            "workflow_step_completed",
            json!({"workflow_id": id, "step_index": 0, "job_id": Uuid::new_v4(),
                   "result": null, "completed_steps": 1}),
        );
        assert_eq!(seed_event(&e, &pos(), Some(4))["total_steps"], 4);
        assert!(seed_event(&e, &pos(), None).get("total_steps").is_none());
    }

    #[test]
    fn seed_bus_shape_machine_status_changed() {
        let e = env(
            "machine-gpu-box-1",
            "machine_status_changed",
            json!({"machine_id": "gpu-box-1", "status": "offline",
                   "previous_status": "online", "details": "no heartbeat for 60s"}),
        );
        let m = seed_event(&e, &pos(), None);
        assert_eq!(m["type"], "machine_status_changed");
        assert_eq!(m["machine_id"], "gpu-box-1");
        assert_eq!(m["status"], "offline");
        assert_eq!(m["previous_status"], "online");
        assert_eq!(m["details"], "no heartbeat for 60s");
        assert_eq!(m["metadata"]["jobsource"]["stream"], "machine-gpu-box-1");
    }

    #[test]
    fn seed_bus_entity_of_streams() {
        assert_eq!(entity_of("job-abc"), Some(("job_id", "abc")));
        assert_eq!(entity_of("workflow-x"), Some(("workflow_id", "x")));
        assert_eq!(entity_of("machine-m-1"), Some(("machine_id", "m-1")));
        assert_eq!(entity_of("other"), None);
    }
}

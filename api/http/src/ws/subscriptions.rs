//! What one `/ws` client subscribed to, and which feed messages it gets.

use super::*;

/// The feed's shared message for `e` as a text frame (a refcount clone of the bytes
/// serialized once per event; they are UTF-8 by construction).
pub(super) fn wire(e: &LiveEvent) -> Option<Utf8Bytes> {
    e.wire().and_then(|b| Utf8Bytes::try_from(b.clone()).ok())
}

/// One client's subscriptions.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    pub(super) jobs: HashSet<String>,
    pub(super) workflows: HashSet<String>,
    pub(super) machines: HashSet<String>,
}

impl Subscriptions {
    /// The message for `e`, when this client should get it.
    pub(super) fn message(&self, e: &LiveEvent) -> Option<Utf8Bytes> {
        if let Some(job) = e.job_id {
            let by_job = self.jobs.is_empty() || self.jobs.contains(&job.to_string());
            let by_machine = e.machine_id.as_ref().filter(|m| self.machines.contains(*m));
            let wire = wire(e)?;
            match by_machine {
                // The shared message plus `machine_id` (it is a JSON object: ends in `}`).
                Some(machine) => {
                    let head = wire.as_str().strip_suffix('}')?;
                    let machine = serde_json::to_string(machine).ok()?;
                    Some(Utf8Bytes::from(format!(
                        "{head},\"machine_id\":{machine}}}"
                    )))
                }
                None if by_job => Some(wire),
                None => None,
            }
        } else if let Some(workflow) = e.workflow_id {
            if self.workflows.contains(&workflow.to_string()) {
                wire(e)
            } else {
                None
            }
        } else if let Some(machine) = &e.machine_id {
            // The machine's own events (`machine_*`, `worker_status_changed`).
            if self.machines.contains(machine) {
                wire(e)
            } else {
                None
            }
        } else {
            None
        }
    }

    /// Applies a client message; returns the reply (an ack or an error).
    pub(super) fn handle(&mut self, text: &str) -> Value {
        let msg: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return error(format!("not JSON: {e}")),
        };
        let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
        let (set, field, subscribe) = match kind {
            "subscribe_job" => (&mut self.jobs, "job_id", true),
            "unsubscribe_job" => (&mut self.jobs, "job_id", false),
            "subscribe_workflow" => (&mut self.workflows, "workflow_id", true),
            "unsubscribe_workflow" => (&mut self.workflows, "workflow_id", false),
            "subscribe_machine" => (&mut self.machines, "machine_id", true),
            "unsubscribe_machine" => (&mut self.machines, "machine_id", false),
            other => {
                return error(format!(
                    "unknown message type {other:?}; expected subscribe_job, subscribe_workflow, \
                     subscribe_machine or unsubscribe_job|unsubscribe_workflow|unsubscribe_machine"
                ))
            }
        };
        let Some(id) = msg
            .get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return error(format!("{kind} needs a non-empty string {field}"));
        };
        // Ids are matched as the server writes them (lowercase hyphenated UUIDs).
        let id = if field == "machine_id" {
            id.to_owned()
        } else {
            id.to_ascii_lowercase()
        };
        let ack = if subscribe {
            "subscribed"
        } else {
            "unsubscribed"
        };
        let reply = json!({"type": ack, field: id});
        if subscribe {
            set.insert(id);
        } else {
            set.remove(&id);
        }
        reply
    }
}

pub(super) fn error(message: String) -> Value {
    json!({"type": "error", "message": message})
}

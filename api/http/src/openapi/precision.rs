//! Makes the generated document as precise as the handlers: every constraint they enforce
//! (bounds, enums, formats, patterns) is written into the schema, the status codes they
//! can answer are listed, and `security` is declared only when API keys are configured
//! (then with `401` on the protected routes and none on the open ones). A client or a
//! fuzzer that follows the document never gets a 4xx for a request it says is valid.

use serde_json::{json, Map, Value};

/// What the document depends on at run time.
pub struct Context {
    /// API keys are configured: `/v1` and `/api` need one.
    pub keys: bool,
    /// The consumers that `POST /v1/projections/{name}/resume` knows.
    pub consumers: Vec<String>,
    /// The projections that `POST /v1/projections/{name}/rebuild` knows.
    pub rebuildable: Vec<String>,
    /// The store's partition count (positions name an existing partition).
    pub partitions: u32,
}

/// `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`: machine and worker ids.
const MACHINE_ID: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";
/// `[a-z0-9][a-z0-9._-]{0,63}`: job types.
const JOB_TYPE: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
/// A capability name.
const CAPABILITY: &str = "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$";
/// `<partition>@<ms>-<seq>` with a partition below `partitions`.
fn position(partitions: u32) -> String {
    let alternatives: Vec<String> = (0..partitions.max(1)).map(|p| p.to_string()).collect();
    format!(
        "^(?:{})@[0-9]{{1,15}}-[0-9]{{1,15}}$",
        alternatives.join("|")
    )
}
/// An http(s) URL with a host and no credentials: see
/// `jobsource_domain::validate::URL_CHARS`.
const HTTP_URL: &str =
    "^https?://[A-Za-z0-9._~:!$&'()*+,;=%-]+(?:[/?#][A-Za-z0-9._~:/?#@!$&'()*+,;=%-]*)?$";
/// An offset other than a time: `start`, `end` or a list of positions `p@ms-seq,...`
/// naming existing partitions.
fn offset_words(partitions: u32) -> String {
    let p = position(partitions);
    let p = p.trim_start_matches('^').trim_end_matches('$');
    format!("^(?:start|end|{p}(?:,{p})*)$")
}
/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
const IDEMPOTENCY_KEY: &str = "^[!-~]{1,255}$";

/// `pattern`, or the empty string.
fn optional(pattern: &str) -> String {
    format!(
        "^(?:{})?$",
        pattern.trim_start_matches('^').trim_end_matches('$')
    )
}

/// Applies every rule to `doc` (the serialized document).
pub fn apply(doc: &mut Value, cx: &Context) {
    security(doc, cx);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if let Some(op) = op.as_object_mut() {
                    operation(path, method, op, cx);
                }
            }
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in schemas.iter_mut() {
            properties(name, schema, cx);
        }
    }
}

fn security(doc: &mut Value, cx: &Context) {
    let Some(root) = doc.as_object_mut() else {
        return;
    };
    if !cx.keys {
        root.remove("security");
        if let Some(c) = root.get_mut("components").and_then(Value::as_object_mut) {
            c.remove("securitySchemes");
        }
    }
}

fn protected(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/api/")
}

fn operation(path: &str, method: &str, op: &mut Map<String, Value>, cx: &Context) {
    if cx.keys && !protected(path) {
        op.insert("security".into(), json!([]));
    }
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            parameter(path, p, cx);
        }
    }
    let has_params = op.contains_key("parameters");
    let idempotent = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p.get("name") == Some(&json!("Idempotency-Key")))
        });
    let has_body = op.contains_key("requestBody");
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(responses) = responses {
        let error = if path.starts_with("/api/") {
            "#/components/schemas/SeedErrorBody"
        } else {
            "#/components/schemas/ErrorBody"
        };
        let mut add = |code: &str, description: &str| {
            responses.entry(code.to_owned()).or_insert_with(|| {
                json!({"description": description,
                    "content": {"application/json": {"schema": {"$ref": error}}}})
            });
        };
        if cx.keys && protected(path) {
            add("401", "Missing or unknown API key");
        }
        if path.contains('{') || has_params || method == "post" {
            add("400", "Malformed request (the field is named in the body)");
        }
        if method == "post" && has_body {
            add("413", "Body over the configured limit");
            add("415", "Body is not application/json");
        }
        if idempotent {
            add("409", "The entity's state or version refuses the command");
            add(
                "422",
                "Invalid values, or an Idempotency-Key reused with another request",
            );
        }
        add("503", "A backend (Redis, PostgreSQL) is unavailable");
    }
}

/// Adds `rules` to a parameter's schema. Optional parameters are `["string", "null"]`:
/// a constraint applies to the string (an absent parameter is what "null" meant).
fn set(schema: &mut Value, rules: Value) {
    if let Some(s) = schema.as_object_mut() {
        if let Some(Value::Array(types)) = s.get("type") {
            if let Some(t) = types.iter().find(|t| *t != "null").cloned() {
                s.insert("type".into(), t);
            }
        }
    }
    add(schema, rules);
}

/// Adds `rules` to a body property's schema (its nullability stays as the type says).
fn add(schema: &mut Value, rules: Value) {
    // A nullable property may be a `oneOf [null, ...]`: the rules go on the non-null arm.
    if let Some(arms) = schema.get_mut("oneOf").and_then(Value::as_array_mut) {
        for arm in arms
            .iter_mut()
            .filter(|a| a.get("type") != Some(&json!("null")))
        {
            add(arm, rules.clone());
        }
        return;
    }
    if let (Some(s), Some(r)) = (schema.as_object_mut(), rules.as_object()) {
        for (k, v) in r {
            if v.is_null() {
                // `null` removes a keyword (a generated `format` that is too narrow).
                s.remove(k);
            } else {
                s.insert(k.clone(), v.clone());
            }
        }
    }
}

fn parameter(path: &str, p: &mut Value, cx: &Context) {
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let place = p
        .get("in")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(schema) = p.get_mut("schema") else {
        return;
    };
    match (place.as_str(), name.as_str()) {
        ("query", "limit") => {
            let max = if path == "/v1/events" { 1000 } else { 500 };
            set(
                schema,
                json!({"type": "integer", "minimum": 1, "maximum": max}),
            );
        }
        ("query", "min_position") => set(
            schema,
            json!({"type": "string", "pattern": position(cx.partitions)}),
        ),
        // An empty header counts as absent.
        ("header", "X-Min-Position") => set(
            schema,
            json!({"type": "string", "pattern": optional(&position(cx.partitions))}),
        ),
        // Empty: from the start. A time is any RFC 3339 date-time.
        ("query", "after") => {
            *schema = json!({"anyOf": [
                {"type": "string", "pattern": optional(&offset_words(cx.partitions))},
                {"type": "string", "format": "date-time"},
            ]});
        }
        ("query", "timeframe") => {
            // The seed's routes read an empty value as the default (`day`).
            let values = if path.starts_with("/api/") {
                json!(["hour", "day", "week", ""])
            } else {
                json!(["hour", "day", "week", "all"])
            };
            set(schema, json!({"type": "string", "enum": values}));
        }
        ("query", "as_of") => set(schema, json!({"type": "string", "format": "date-time"})),
        // The job and workflow lists filter by any status or type (an unknown one matches
        // nothing); machines and deliveries check theirs.
        ("query", "status") if path == "/v1/machines" => set(
            schema,
            json!({"type": "string", "enum": ["online", "busy", "offline", "error"]}),
        ),
        ("query", "status") if path == "/v1/webhooks/deliveries" => set(
            schema,
            // Empty: any status.
            json!({"type": "string", "enum": ["pending", "delivered", "dead", ""]}),
        ),
        ("query", "as_of_version") => set(
            schema,
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "format": null}),
        ),
        ("header", "Idempotency-Key") => set(
            schema,
            json!({"type": "string", "pattern": IDEMPOTENCY_KEY}),
        ),
        ("header", "If-Match") => set(
            schema,
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "format": null}),
        ),
        ("path", "id") if path.starts_with("/v1/machines/") => {
            set(schema, json!({"type": "string", "pattern": MACHINE_ID}))
        }
        ("path", "worker_id") => set(schema, json!({"type": "string", "pattern": MACHINE_ID})),
        ("path", "name") if path.ends_with("/resume") => {
            set(schema, json!({"type": "string", "enum": cx.consumers}))
        }
        ("path", "name") if path.ends_with("/rebuild") => {
            set(schema, json!({"type": "string", "enum": cx.rebuildable}))
        }
        _ => {}
    }
}

/// Request body properties, by schema and property name, and the rules across fields.
fn properties(schema_name: &str, schema: &mut Value, cx: &Context) {
    let request = schema_name.contains("Request") || schema_name.ends_with("Body");
    if !request {
        return;
    }
    match schema_name {
        // `delay_ms` and `run_at` are alternatives.
        "SubmitJobRequest" => {
            if let Some(s) = schema.as_object_mut() {
                s.insert("not".into(), json!({"required": ["delay_ms", "run_at"]}));
            }
        }
        "SeedSubmitRequest" => require(schema, &["type"]),
        "SeedWorkflowRequest" => require(schema, &["name", "steps"]),
        "SeedStepRequest" => require(schema, &["type"]),
        "SeedProgressRequest" => require(schema, &["progress"]),
        _ => {}
    }
    let workflow = schema_name.contains("Workflow");
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        let rules = match name.as_str() {
            "type" => json!({"pattern": JOB_TYPE}),
            "machine_id" | "worker_id" => json!({"pattern": MACHINE_ID}),
            "webhook_url" => json!({"pattern": HTTP_URL}),
            // A machine lists what it offers (any non-blank names, once each); jobs and
            // claims use the queue's capability names.
            "capabilities" if schema_name == "RegisterMachineRequest" => json!({
                "maxItems": 256, "uniqueItems": true,
                "items": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "\\S"}
            }),
            "capabilities" => {
                json!({"maxItems": 32, "items": {"type": "string", "pattern": CAPABILITY}})
            }
            "gpu_memory" => json!({"minimum": 0, "maximum": 10000}),
            "priority" | "progress" => json!({"minimum": 0, "maximum": 100}),
            "max_retries" => json!({"minimum": 0, "maximum": 100}),
            "name" if workflow => json!({"minLength": 1, "pattern": "[^\\s]"}),
            "steps" => json!({"minItems": 1, "maxItems": 50}),
            "from" if schema_name == "RebuildRequest" => {
                *prop = json!({"anyOf": [
                    {"type": "string", "pattern": optional(&offset_words(cx.partitions))},
                    {"type": "string", "format": "date-time"},
                    {"type": "null"},
                ]});
                continue;
            }
            "status" if schema_name == "WorkerReportBody" => {
                json!({"enum": ["idle", "busy", "offline"]})
            }
            _ => continue,
        };
        // Nullable and required-ness stay: only the non-null value is constrained.
        if prop.get("type") == Some(&json!(["string", "null"])) && name == "type" {
            set(prop, rules);
        } else {
            add(prop, rules);
        }
    }
}

fn require(schema: &mut Value, fields: &[&str]) {
    let Some(s) = schema.as_object_mut() else {
        return;
    };
    let required = s.entry("required").or_insert_with(|| json!([]));
    if let Some(list) = required.as_array_mut() {
        for f in fields {
            if !list.iter().any(|v| v == f) {
                list.push(json!(f));
            }
        }
    }
    // A required field is not null.
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        for f in fields {
            if let Some(p) = props.get_mut(*f) {
                set(p, json!({}));
                if let Some(arms) = p.get("oneOf").and_then(Value::as_array).cloned() {
                    if let Some(arm) = arms
                        .into_iter()
                        .find(|a| a.get("type") != Some(&json!("null")))
                    {
                        *p = arm;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    fn doc(keys: bool) -> Value {
        let mut doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        apply(
            &mut doc,
            &Context {
                keys,
                consumers: vec!["archive".into(), "redis".into()],
                rebuildable: vec!["redis".into()],
                partitions: 4,
            },
        );
        doc
    }

    fn param<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
    }

    #[test]
    fn security_is_declared_only_with_keys_and_open_routes_say_so() {
        let open = doc(false);
        assert!(open.get("security").is_none());
        assert!(open["components"].get("securitySchemes").is_none());
        let keyed = doc(true);
        assert!(keyed.get("security").is_some());
        assert_eq!(keyed["paths"]["/health"]["get"]["security"], json!([]));
        assert!(keyed["paths"]["/v1/jobs"]["post"]["responses"]
            .get("401")
            .is_some());
    }

    #[test]
    fn the_handlers_rules_are_in_the_schema() {
        let d = doc(false);
        let limit = &param(&d, "/v1/jobs", "get", "limit")["schema"];
        assert_eq!(
            (limit["minimum"].clone(), limit["maximum"].clone()),
            (json!(1), json!(500))
        );
        assert_eq!(
            param(&d, "/v1/events", "get", "limit")["schema"]["maximum"],
            1000
        );
        let pos = param(&d, "/v1/jobs", "get", "min_position")["schema"]["pattern"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(pos, "^(?:0|1|2|3)@[0-9]{1,15}-[0-9]{1,15}$");
        assert_eq!(
            param(&d, "/v1/projections/{name}/resume", "post", "name")["schema"]["enum"],
            json!(["archive", "redis"])
        );
        assert_eq!(
            param(&d, "/v1/workers/{worker_id}/claim", "post", "worker_id")["schema"]["pattern"],
            MACHINE_ID
        );
        let submit = &d["components"]["schemas"]["SubmitJobRequest"];
        assert_eq!(submit["not"], json!({"required": ["delay_ms", "run_at"]}));
        assert_eq!(submit["properties"]["type"]["pattern"], JOB_TYPE);
        assert!(d["paths"]["/v1/jobs/{id}/events"]["get"]["responses"]
            .get("400")
            .is_some());
    }
}

//! Answers of the `/v1` commands and the event views of the audit routes.

use super::*;

/// Answer of a job command.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobCommandResponse {
    /// Job id.
    pub job_id: Uuid,
    /// Status after the command.
    pub status: String,
    /// Stream version after the command.
    pub version: u64,
    /// Position of the last event written (`null` when the command changed nothing);
    /// pass as `min_position` to read your write.
    pub position: Option<String>,
    /// True when this answer is the recorded result of an earlier request with the
    /// same `Idempotency-Key`.
    pub replayed: bool,
    /// With `next` in a complete or fail: the worker's next job (`null`: none ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Option<Box<ClaimResponse>>>,
}

/// Answer of a workflow command.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowCommandResponse {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// One job per step, in step order.
    pub job_ids: Vec<Uuid>,
    /// Status after the command.
    pub status: String,
    /// Stream version after the command.
    pub version: u64,
    /// Position of the last event written.
    pub position: Option<String>,
    /// True for a replayed idempotent request.
    pub replayed: bool,
}

/// A claimed job: the job and the position of its `job_assigned`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    /// The job, assigned to the worker.
    #[schema(value_type = crate::schema::JobView)]
    pub job: JobView,
    /// Stream version after the assignment.
    pub version: u64,
    /// Position of the `job_assigned` event.
    pub position: Option<String>,
}

/// A stored event with its position.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// `<partition>@<log id>`.
    pub position: String,
    /// Event id (UUID v7).
    pub event_id: Uuid,
    /// `job-<uuid>` or `workflow-<uuid>`.
    pub stream: String,
    /// 1-based version in the stream.
    pub version: u64,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Payload schema version.
    pub schema: u32,
    /// Append time (RFC 3339, ms).
    pub occurred_at: String,
    /// Correlation id.
    pub correlation_id: String,
    /// What caused it.
    pub causation_id: Option<String>,
    /// Metadata (`actor`, ...).
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Payload (written out as stored, without re-encoding).
    #[schema(value_type = Object)]
    pub data: jobsource_eventstore::Payload,
}

impl From<RecordedEvent> for EventView {
    fn from(e: RecordedEvent) -> Self {
        let env = e.envelope;
        EventView {
            position: e.position.to_string(),
            event_id: env.event_id,
            stream: env.stream,
            version: env.version,
            event_type: env.event_type,
            schema: env.schema,
            occurred_at: jobsource_app::read::view::timestamp(env.occurred_at),
            correlation_id: env.correlation_id,
            causation_id: env.causation_id,
            metadata: env.metadata,
            data: env.data,
        }
    }
}

/// The events of one stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamEvents {
    /// Stream name.
    pub stream: String,
    /// Envelopes in version order.
    pub events: Vec<EventView>,
}

/// A page of `GET /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPageResponse {
    /// Matching events in global order.
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page (one position per partition).
    pub next_cursor: String,
    /// Whether the log held more entries past `next_cursor` when read.
    pub more: bool,
}

-- Projection checkpoints: for every (projection, partition) the last log entry applied.
-- A projector reads its row FOR UPDATE, applies a batch and moves the checkpoint in the
-- same transaction, so rows and checkpoint can never disagree (a crash rolls back both).
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection  text        NOT NULL,
    partition   integer     NOT NULL,
    log_ms      bigint      NOT NULL DEFAULT 0,   -- Redis stream id, milliseconds part
    log_seq     bigint      NOT NULL DEFAULT 0,   -- Redis stream id, sequence part
    events      bigint      NOT NULL DEFAULT 0,   -- events applied so far (for status)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, partition)
);

-- The audit archive: every envelope with its place in the global order.
CREATE TABLE IF NOT EXISTS events (
    event_id        uuid        PRIMARY KEY,
    stream          text        NOT NULL,
    version         bigint      NOT NULL,
    type            text        NOT NULL,
    schema          integer     NOT NULL,
    occurred_at     timestamptz NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    metadata        jsonb       NOT NULL,
    data            jsonb       NOT NULL,
    partition       integer     NOT NULL,
    log_ms          bigint      NOT NULL,
    log_seq         bigint      NOT NULL,
    position        text        NOT NULL,         -- "<partition>@<ms>-<seq>"
    UNIQUE (stream, version)
);
CREATE INDEX IF NOT EXISTS events_type_idx        ON events (type);
CREATE INDEX IF NOT EXISTS events_correlation_idx ON events (correlation_id);
CREATE INDEX IF NOT EXISTS events_causation_idx   ON events (causation_id);
CREATE INDEX IF NOT EXISTS events_occurred_at_idx ON events (occurred_at);
CREATE INDEX IF NOT EXISTS events_position_idx    ON events (partition, log_ms, log_seq);

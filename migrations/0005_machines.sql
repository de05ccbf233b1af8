-- The `postgres` read model of machines (the `Machine` aggregate, streams `machine-<id>`):
-- what `GET /v1/machines` lists and filters.
-- Like `jobs`, every row carries the stream `version` of the last event applied to it and
-- that event's `position`; the projector folds a batch's events onto the row and writes it
-- only when its version is above the stored one, so re-delivered events change nothing.
-- The time of the last heartbeat that changed nothing is not in the log; the API reads it
-- from the heartbeat store (`<prefix>:{p<N>}:machines:seen`). `last_heartbeat` here is the
-- time of the last event the machine itself caused.

CREATE TABLE IF NOT EXISTS machines (
    id              text              PRIMARY KEY,             -- the machine id
    status          text              NOT NULL,                -- online | busy | offline | error
    capabilities    text[]            NOT NULL DEFAULT '{}',
    gpu_memory      double precision,                          -- GB
    ip_address      text,
    workers         jsonb             NOT NULL DEFAULT '[]',   -- [{worker_id, status, current_job_id}] by worker id
    current_jobs    uuid[]            NOT NULL DEFAULT '{}',   -- the workers' current jobs, sorted
    last_heartbeat  timestamptz,
    registered_at   timestamptz       NOT NULL,                -- first registration
    updated_at      timestamptz       NOT NULL,
    version         bigint            NOT NULL,
    position        text              NOT NULL
);
CREATE INDEX IF NOT EXISTS machines_status_idx ON machines (status, id);

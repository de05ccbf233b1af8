-- The `postgres` read model: lists, filters and stats over jobs and workflows.
-- Every row carries the stream `version` of the last event applied to it and that event's
-- `position`; the projector only applies an event whose version is above the row's, so
-- re-delivered events change nothing.

CREATE TABLE IF NOT EXISTS jobs (
    id            uuid        PRIMARY KEY,
    type          text        NOT NULL,
    status        text        NOT NULL,
    priority      integer     NOT NULL,
    progress      integer     NOT NULL DEFAULT 0,
    stage         text,
    prompt        text,
    parameters    jsonb       NOT NULL DEFAULT '{}',
    requirements  jsonb,
    webhook_url   text,
    workflow_id   uuid,
    step_index    integer,
    depends_on    uuid[]      NOT NULL DEFAULT '{}',
    max_retries   integer     NOT NULL DEFAULT 3,
    attempt       integer     NOT NULL DEFAULT 0,
    retry_count   integer     NOT NULL DEFAULT 0,
    worker_id     text,
    machine_id    text,
    result        jsonb,
    error         jsonb,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    started_at    timestamptz,              -- first assignment
    completed_at  timestamptz,              -- reached a terminal status
    version       bigint      NOT NULL,
    position      text        NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status_idx      ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_type_idx        ON jobs (type, created_at);
CREATE INDEX IF NOT EXISTS jobs_workflow_idx    ON jobs (workflow_id);
CREATE INDEX IF NOT EXISTS jobs_created_at_idx  ON jobs (created_at);

CREATE TABLE IF NOT EXISTS workflows (
    id               uuid        PRIMARY KEY,
    name             text        NOT NULL,
    description      text,
    status           text        NOT NULL,
    total_steps      integer     NOT NULL,
    completed_steps  integer     NOT NULL DEFAULT 0,
    job_ids          uuid[]      NOT NULL,
    webhook_url      text,
    error            jsonb,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    completed_at     timestamptz,
    version          bigint      NOT NULL,
    position         text        NOT NULL
);
CREATE INDEX IF NOT EXISTS workflows_status_idx ON workflows (status, created_at);

-- One row per step, written from the workflow's own events.
CREATE TABLE IF NOT EXISTS workflow_steps (
    workflow_id   uuid        NOT NULL,
    step_index    integer     NOT NULL,
    job_id        uuid        NOT NULL,
    type          text        NOT NULL,
    depends_on    integer[]   NOT NULL DEFAULT '{}',
    status        text        NOT NULL,     -- pending | started | completed | failed
    result        jsonb,
    error         jsonb,
    started_at    timestamptz,
    completed_at  timestamptz,
    version       bigint      NOT NULL,     -- version of the workflow stream last applied
    position      text        NOT NULL,
    PRIMARY KEY (workflow_id, step_index)
);
CREATE INDEX IF NOT EXISTS workflow_steps_job_idx ON workflow_steps (job_id);

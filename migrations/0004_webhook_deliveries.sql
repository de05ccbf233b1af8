-- Webhook deliveries (the `webhooks` subscriber, SPEC section 6.3).
--
-- The `webhooks` projection inserts one row per (event, target url) in the same
-- transaction that moves its checkpoint; the row id is derived from (event_id, url), and
-- the unique (event_id, url) makes a re-delivered event insert nothing. The sender claims
-- due rows (status `pending`, `next_attempt_at <= now()`) with FOR UPDATE SKIP LOCKED,
-- pushing `next_attempt_at` ahead by a lease and stamping `lease_token`, so several
-- senders (processes) never send the same row at once and a crashed sender's rows come due
-- again once the lease runs out. Every attempt is a row in `webhook_attempts`.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id                  uuid        PRIMARY KEY,      -- the X-Jobsource-Delivery header
    event_id            uuid        NOT NULL,
    event_type          text        NOT NULL,
    stream              text        NOT NULL,
    position            text        NOT NULL,         -- "<partition>@<ms>-<seq>" of the event
    url                 text        NOT NULL,
    payload             jsonb       NOT NULL,         -- the body sent (signed as serialized)
    status              text        NOT NULL DEFAULT 'pending'
                                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts            integer     NOT NULL DEFAULT 0,   -- attempts made, all rounds
    round_start         integer     NOT NULL DEFAULT 0,   -- `attempts` when the current round began
    requeues            integer     NOT NULL DEFAULT 0,   -- manual retries of a dead delivery
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_token         uuid,                             -- set by the sender that claimed it
    last_status_code    integer,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    delivered_at        timestamptz,
    UNIQUE (event_id, url)
);
-- The sender's claim: due pending rows, earliest first.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- GET /v1/webhooks/deliveries?status=: pages by id (UUID v7-shaped: event time first).
CREATE INDEX IF NOT EXISTS webhook_deliveries_status_idx ON webhook_deliveries (status, id);

-- Every attempt of every delivery.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id              bigserial   PRIMARY KEY,
    delivery_id     uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt         integer     NOT NULL,             -- 1-based over all rounds
    attempted_at    timestamptz NOT NULL,
    duration_ms     bigint      NOT NULL,
    status_code     integer,                          -- absent: no HTTP answer
    error           text,                             -- absent: delivered
    outcome         text        NOT NULL CHECK (outcome IN ('delivered', 'failed', 'dead'))
);
CREATE INDEX IF NOT EXISTS webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt);

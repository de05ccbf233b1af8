-- Projector state per (projection, partition), next to the checkpoint: `running`,
-- `stalled` (a batch kept failing after bounded retries; the checkpoint stays before the
-- failing event) or `stopped`, with the last error and where it happened.
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'running';
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS last_error text;
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS error_position text;

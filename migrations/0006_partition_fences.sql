-- Fencing for partition leases (scale-out): the epoch of the lease under which each
-- (projection, partition) checkpoint was last written. A batch carrying a lower epoch (a
-- paused former owner) is refused, so it can never move the checkpoint or write its rows.
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS fence bigint NOT NULL DEFAULT 0;

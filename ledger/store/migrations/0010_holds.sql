-- Holds: what open holds reserve, in the balances view, and one row per hold.
ALTER TABLE balances ADD COLUMN IF NOT EXISTS held bigint NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS holds (
    hold_id text PRIMARY KEY,
    stream_id uuid NOT NULL,
    amount bigint NOT NULL,
    captured bigint NOT NULL DEFAULT 0,
    released bigint NOT NULL DEFAULT 0,
    status text NOT NULL,
    reason text NOT NULL,
    expires_at timestamptz NOT NULL,
    placed_at timestamptz NOT NULL,
    settled_at timestamptz,
    position bigint NOT NULL
);
-- What the expiry sweeper asks: open holds, soonest expiry first.
CREATE INDEX IF NOT EXISTS holds_open_by_expiry ON holds (expires_at) WHERE status = 'held';
CREATE INDEX IF NOT EXISTS holds_by_stream ON holds (stream_id, position DESC);

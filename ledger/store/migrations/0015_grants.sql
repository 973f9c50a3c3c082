-- Grants: what remains of them in the balances, the statement and the alerts'
-- copy of each account, and one row per grant (what the expiry sweeper reads).
ALTER TABLE balances ADD COLUMN IF NOT EXISTS granted bigint NOT NULL DEFAULT 0;
ALTER TABLE statement_lines ADD COLUMN IF NOT EXISTS granted_change bigint NOT NULL DEFAULT 0;
ALTER TABLE statement_lines ADD COLUMN IF NOT EXISTS granted_after bigint NOT NULL DEFAULT 0;
ALTER TABLE notifier_accounts ADD COLUMN IF NOT EXISTS granted bigint NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS grants (
    grant_id text PRIMARY KEY,
    stream_id uuid NOT NULL,
    amount bigint NOT NULL,
    remaining bigint NOT NULL,
    priority integer NOT NULL,
    expires_at timestamptz,
    reason text NOT NULL,
    status text NOT NULL,
    granted_at timestamptz NOT NULL,
    closed_at timestamptz,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_active_by_expiry ON grants (expires_at)
    WHERE status = 'active' AND expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS grants_by_account ON grants (stream_id, position);

-- When each token was last used (`ledger tokens list`); written at most once a minute
-- per token, so a busy token costs one UPDATE a minute, not one per request.
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS last_used_at timestamptz;

-- What reconciliation asks (`ledger stripe reconcile`): pending purchases, oldest first.
-- Pending ones are few (each is paid or expires within a day), so the index stays small.
CREATE INDEX IF NOT EXISTS purchases_pending_by_creation ON purchases (created_at)
    WHERE status = 'pending';

-- A balance read leaves out the view's row of an account with an open hold or an active
-- grant past its expiry (projections/balance_reads.py): one probe per read, which the
-- indexes by account (every hold and grant it ever had) made a walk of its whole history.
CREATE INDEX IF NOT EXISTS holds_open_by_account ON holds (stream_id, expires_at)
    WHERE status = 'held';
CREATE INDEX IF NOT EXISTS grants_active_by_account ON grants (stream_id, expires_at)
    WHERE status = 'active';

-- An expired grant closed at its expires_at, however late its GrantExpired was recorded
-- (projections/grants.py's closed_at): the grants view said when the sweeper recorded it,
-- while the list showed expires_at before then.
UPDATE grants SET closed_at = expires_at
    WHERE status = 'expired' AND expires_at IS NOT NULL AND closed_at IS DISTINCT FROM expires_at;

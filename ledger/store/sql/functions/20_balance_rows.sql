-- The balances view's rows a balance read may answer with (projections/balance_reads.py),
-- for several accounts in one round trip: only a row that has applied its account's last
-- event, whose account has no open hold or active grant past its expiry at `at` (the
-- write side answers for the others, showing those expiries). The holds and grants views
-- must have applied that event too, or a due one could be missing from them.
--
-- Why a function: sent as a statement, PostgreSQL planned it again on every read (the
-- array's length moves its estimates, so it kept its custom plans), and planning cost more
-- than running it: 60 us of the server's CPU a read before the expiry probes, 150 us with
-- them; a read round trip 170-210 us as a statement, 147-196 us here with the probes
-- (one connection, interleaved). As load_streams (20_load_streams.sql), the function
-- keeps one generic plan per session for its own statement only.
CREATE OR REPLACE FUNCTION balance_rows(account_ids text[], at timestamptz)
RETURNS TABLE (
    account_id text, monthly_allowance bigint, allowance_remaining bigint,
    topup_balance bigint, held bigint, period text, granted bigint
)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT b.account_id, b.monthly_allowance, b.allowance_remaining, b.topup_balance,
           b.held, b.period, b.granted
    FROM balances b
    WHERE b.account_id = any(account_ids)
      AND coalesce((SELECT e.notification_id FROM stored_events e
                    WHERE e.originator_id = b.stream_id
                    ORDER BY e.originator_version DESC LIMIT 1), 0)
          <= coalesce((SELECT min(p.position) FROM projection_positions p
                       WHERE p.name IN ('balances', 'holds', 'grants')), 0)
      AND NOT EXISTS (SELECT FROM grants g WHERE g.stream_id = b.stream_id
                      AND g.status = 'active' AND g.expires_at <= at)
      AND NOT EXISTS (SELECT FROM holds h WHERE h.stream_id = b.stream_id
                      AND h.status = 'held' AND h.expires_at <= at);
END
$$;

-- Each stream's newest snapshot and the events after it, for several streams in one
-- round trip (EventStore.load_many_from_snapshots, ledger/store/event_store.py): the
-- rows of a stream with is_snapshot first, then by version.
--
-- Both halves are read down the streams' indexes from where they start: the newest
-- snapshot, and the events after its version (OFFSET 0 keeps that scan per stream; a
-- join over originator_id = any(...) read every event of every stream, snapshots or
-- not, and dropped those before the snapshot). No CTE: it made planning dearer.
--
-- Why a function: sent as a statement, PostgreSQL planned it again on every call, as
-- the array's length changed its estimates and so kept its custom plans, at about
-- 200 us of the server's CPU a call, more than running it (a load of one or two fresh
-- Checkout sessions: 307-470 us a call, 127-223 us here; bench/README.md, tenth
-- session). The plan does not depend on how many streams are asked for, so the
-- function keeps one generic plan per session (plan_cache_mode, set for its own
-- statements only: the service's other statements keep PostgreSQL's choice).
CREATE OR REPLACE FUNCTION load_streams(streams uuid[])
RETURNS TABLE (
    is_snapshot boolean, originator_id uuid, originator_version bigint, topic text,
    state bytea, notification_id bigint, recorded_at timestamptz, hash bytea
)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT true, newest.* FROM unnest(streams) AS wanted(originator_id)
    CROSS JOIN LATERAL (
        SELECT s.originator_id, s.originator_version, s.topic, s.state,
               0::bigint, s.event_recorded_at, ''::bytea
        FROM snapshots s WHERE s.originator_id = wanted.originator_id
        ORDER BY s.originator_version DESC LIMIT 1) AS newest
    UNION ALL
    SELECT false, after.* FROM unnest(streams) AS wanted(originator_id)
    CROSS JOIN LATERAL (
        SELECT e.originator_id, e.originator_version, e.topic, e.state, e.notification_id,
               e.recorded_at, e.hash
        FROM stored_events e
        WHERE e.originator_id = wanted.originator_id
          AND e.originator_version > coalesce(
              (SELECT max(s.originator_version) FROM snapshots s
               WHERE s.originator_id = wanted.originator_id), 0)
        OFFSET 0) AS after
    ORDER BY 2, 1 DESC, 3;
END;
$$;

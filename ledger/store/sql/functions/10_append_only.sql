-- Events, snapshots and claims are facts: a correction is a new event, never an edit.
-- The triggers that call this are made by the migrations (0001 for stored_events,
-- 0012 for snapshots, 0021 for claims); the service's role could not disable them anyway (it
-- owns no table, see grants.sql).
CREATE OR REPLACE FUNCTION stored_events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

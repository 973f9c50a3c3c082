-- The event store, in the eventsourcing library's table layout
-- (originator_id, originator_version, topic, state, notification_id)
-- plus the writing transaction's id and the time the row was recorded.
CREATE TABLE IF NOT EXISTS stored_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text NOT NULL,
    state bytea NOT NULL,
    notification_id bigserial NOT NULL,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (originator_id, originator_version)
);

CREATE UNIQUE INDEX IF NOT EXISTS stored_events_notification_id_idx
    ON stored_events (notification_id);

-- Events are facts: a correction is a new event, never an edit.
CREATE OR REPLACE FUNCTION stored_events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stored_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

DROP TRIGGER IF EXISTS stored_events_no_update_or_delete ON stored_events;
CREATE TRIGGER stored_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON stored_events
    FOR EACH ROW EXECUTE FUNCTION stored_events_are_append_only();

DROP TRIGGER IF EXISTS stored_events_no_truncate ON stored_events;
CREATE TRIGGER stored_events_no_truncate
    BEFORE TRUNCATE ON stored_events
    FOR EACH STATEMENT EXECUTE FUNCTION stored_events_are_append_only();

-- Appends go through this one function so that every writer follows the
-- ordering protocol that lets readers tail the table without skipping a
-- late commit (see ledger/store/event_store.py for the reasoning).
--
-- The advisory lock is held only while the rows take their transaction id
-- and their notification ids, not until commit: writers still commit (and
-- fsync) in parallel. Inside the lock a transaction id and a block of
-- notification ids are handed out together, so notification_id order equals
-- transaction_id order among appends; a reader that only returns rows whose
-- transaction is older than every running one therefore never passes over
-- a row that commits later.
CREATE OR REPLACE FUNCTION append_events(
    ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS TABLE (notification_id bigint, recorded_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'append_events must be the first write of its transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    PERFORM pg_advisory_lock(748200101);  -- the ordering lock; any constant works
    RETURN QUERY
        INSERT INTO stored_events AS e (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        ON CONFLICT ON CONSTRAINT stored_events_pkey DO NOTHING
        RETURNING e.notification_id, e.recorded_at;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    PERFORM pg_advisory_unlock(748200101);
    IF inserted <> cardinality(ids) THEN
        RAISE EXCEPTION 'version conflict: an event at one of these versions already exists'
            USING ERRCODE = 'unique_violation';
    END IF;
    PERFORM pg_notify('ledger_events', '');
END;
$$;

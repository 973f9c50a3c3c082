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

-- Events are facts: a correction is a new event, never an edit
-- (the trigger function is ledger/store/sql/functions/10_append_only.sql).
DROP TRIGGER IF EXISTS stored_events_no_update_or_delete ON stored_events;
CREATE TRIGGER stored_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON stored_events
    FOR EACH ROW EXECUTE FUNCTION stored_events_are_append_only();

DROP TRIGGER IF EXISTS stored_events_no_truncate ON stored_events;
CREATE TRIGGER stored_events_no_truncate
    BEFORE TRUNCATE ON stored_events
    FOR EACH STATEMENT EXECUTE FUNCTION stored_events_are_append_only();

-- Appends go through one function: ledger/store/sql/functions/20_append.sql.

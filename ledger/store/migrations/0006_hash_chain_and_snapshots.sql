-- Tamper evidence: each event's hash covers its content and the hash of the
-- event before it in the same stream (a chain per aggregate: one per account,
-- one per Checkout session). There is no global chain: it would make every
-- append wait for the one before it, which is what the watermark design of
-- 0001 avoids; the per-stream chains, the append-only trigger and
-- `ledger audit verify` cover changed and removed rows.
--
-- hash = sha256(previous hash (32 zero bytes for version 1) || originator_id (16 bytes)
--               || originator_version (int8) || recorded_at (int8 microseconds since 2000)
--               || length of topic (int4) || topic (UTF-8) || state)
ALTER TABLE stored_events ADD COLUMN IF NOT EXISTS hash bytea;

-- event_hash() is ledger/store/sql/functions/10_event_hash.sql (applied before migrations).

-- Rows written before this migration get their hashes now, the one time the
-- append-only trigger is lifted, inside this migration's transaction.
ALTER TABLE stored_events DISABLE TRIGGER stored_events_no_update_or_delete;
DO $$
DECLARE
    row record;
    previous bytea;
    last_stream uuid;
BEGIN
    FOR row IN
        SELECT originator_id, originator_version, recorded_at, topic, state
        FROM stored_events WHERE hash IS NULL ORDER BY originator_id, originator_version
    LOOP
        IF row.originator_version = 1 OR last_stream IS DISTINCT FROM row.originator_id THEN
            SELECT e.hash INTO previous FROM stored_events e
            WHERE e.originator_id = row.originator_id
              AND e.originator_version = row.originator_version - 1;
        END IF;
        previous := event_hash(
            coalesce(previous, decode(repeat('00', 32), 'hex')), row.originator_id,
            row.originator_version, row.recorded_at, row.topic, row.state
        );
        UPDATE stored_events SET hash = previous
        WHERE originator_id = row.originator_id AND originator_version = row.originator_version;
        last_stream := row.originator_id;
    END LOOP;
END;
$$;
ALTER TABLE stored_events ENABLE TRIGGER stored_events_no_update_or_delete;
ALTER TABLE stored_events ALTER COLUMN hash SET NOT NULL;


-- Snapshots: derived, disposable copies of an aggregate's state at a version,
-- so long histories load as fast as short ones. Not events: never audited,
-- safe to delete. event_recorded_at is when the snapshot's last event was
-- recorded, so replays "as of" a moment can start from one taken before it.
CREATE TABLE IF NOT EXISTS snapshots (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text NOT NULL,
    state bytea NOT NULL,
    event_recorded_at timestamptz NOT NULL,
    PRIMARY KEY (originator_id, originator_version)
);

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

CREATE OR REPLACE FUNCTION event_hash(
    previous bytea, id uuid, version bigint, recorded timestamptz, topic text, state bytea
) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT sha256(
        previous || uuid_send(id) || int8send(version) || timestamptz_send(recorded)
        || int4send(octet_length(convert_to(topic, 'UTF8'))) || convert_to(topic, 'UTF8') || state
    )
$$;

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

DROP FUNCTION IF EXISTS append_events(uuid[], bigint[], text[], bytea[]);
CREATE FUNCTION append_events(
    ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS TABLE (notification_id bigint, recorded_at timestamptz, hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint;
    recorded timestamptz := clock_timestamp();
    hashes bytea[] := '{}';
    previous bytea;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'append_events must be the first write of its transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- Chain each event to the one before it in its stream, before taking the lock.
    FOR i IN 1 .. coalesce(cardinality(ids), 0) LOOP
        IF i > 1 AND ids[i] = ids[i - 1] AND versions[i] = versions[i - 1] + 1 THEN
            previous := hashes[i - 1];
        ELSE
            previous := NULL;
            SELECT e.hash INTO previous FROM stored_events e
            WHERE e.originator_id = ids[i] AND e.originator_version = versions[i] - 1;
        END IF;
        hashes := hashes || event_hash(
            coalesce(previous, decode(repeat('00', 32), 'hex')),
            ids[i], versions[i], recorded, topics[i], states[i]
        );
    END LOOP;
    -- The ordering lock, held only while ids are handed out (see migration 0001).
    PERFORM pg_advisory_lock(748200101);
    RETURN QUERY
        INSERT INTO stored_events AS e
            (originator_id, originator_version, topic, state, recorded_at, hash)
        SELECT u.id, u.version, u.topic, u.state, recorded, u.hash
        FROM unnest(ids, versions, topics, states, hashes) AS u(id, version, topic, state, hash)
        ON CONFLICT ON CONSTRAINT stored_events_pkey DO NOTHING
        RETURNING e.notification_id, e.recorded_at, e.hash;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    PERFORM pg_advisory_unlock(748200101);
    IF inserted <> cardinality(ids) THEN
        RAISE EXCEPTION 'version conflict: an event at one of these versions already exists'
            USING ERRCODE = 'unique_violation';
    END IF;
    PERFORM pg_notify('ledger_events', '');
END;
$$;

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

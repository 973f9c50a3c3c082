-- One definition of the hash chain for both append paths (0006's append_events
-- and 0007's append_batch each had a copy of this loop).
CREATE OR REPLACE FUNCTION chain_hashes(
    groups int[], ids uuid[], versions bigint[], topics text[], states bytea[],
    recorded timestamptz
) RETURNS bytea[]
LANGUAGE plpgsql AS $$
DECLARE
    hashes bytea[] := '{}';
    previous bytea;
BEGIN
    -- Each event chains to the one before it in its stream: the previous element
    -- when it is that (in the same group), otherwise the stored row.
    FOR i IN 1 .. coalesce(cardinality(ids), 0) LOOP
        IF i > 1 AND ids[i] = ids[i - 1] AND versions[i] = versions[i - 1] + 1
           AND groups[i] IS NOT DISTINCT FROM groups[i - 1] THEN
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
    RETURN hashes;
END;
$$;

CREATE OR REPLACE FUNCTION append_events(
    ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS TABLE (notification_id bigint, recorded_at timestamptz, hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint;
    recorded timestamptz := clock_timestamp();
    hashes bytea[];
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'append_events must be the first write of its transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- Chain each event to the one before it in its stream, before taking the lock.
    hashes := chain_hashes(NULL, ids, versions, topics, states, recorded);
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

CREATE OR REPLACE FUNCTION append_batch(
    commands int,
    event_commands int[], ids uuid[], versions bigint[], topics text[], states bytea[],
    key_commands int[], key_scopes text[], key_names text[], key_hashes bytea[],
    key_answers bytea[],
    snapshot_commands int[], snapshot_ids uuid[], snapshot_versions bigint[],
    snapshot_topics text[], snapshot_states bytea[]
) RETURNS TABLE (command int, outcome text, positions bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    recorded timestamptz := clock_timestamp();
    hashes bytea[];
    wanted bigint;
    inserted bigint[];
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'append_batch must be the first write of its transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    hashes := chain_hashes(event_commands, ids, versions, topics, states, recorded);

    PERFORM pg_advisory_lock(748200101);
    FOR c IN 1 .. commands LOOP
        command := c;
        positions := NULL;
        BEGIN
            SELECT count(*) INTO wanted FROM unnest(event_commands) AS u(n) WHERE u.n = c;
            WITH rows AS (
                INSERT INTO stored_events AS e
                    (originator_id, originator_version, topic, state, recorded_at, hash)
                SELECT u.id, u.version, u.topic, u.state, recorded, u.hash
                FROM unnest(event_commands, ids, versions, topics, states, hashes)
                    AS u(n, id, version, topic, state, hash)
                WHERE u.n = c
                ON CONFLICT ON CONSTRAINT stored_events_pkey DO NOTHING
                RETURNING e.notification_id
            )
            SELECT coalesce(array_agg(notification_id ORDER BY notification_id), '{}')
            INTO inserted FROM rows;
            IF cardinality(inserted) <> wanted THEN
                RAISE EXCEPTION 'version conflict in command %', c USING ERRCODE = 'LC001';
            END IF;
            INSERT INTO idempotency_keys (scope, key, request_hash, response)
            SELECT u.scope, u.key, u.hash, u.answer
            FROM unnest(key_commands, key_scopes, key_names, key_hashes, key_answers)
                AS u(n, scope, key, hash, answer)
            WHERE u.n = c;
            INSERT INTO snapshots (originator_id, originator_version, topic, state,
                                   event_recorded_at)
            SELECT u.id, u.version, u.topic, u.state, clock_timestamp()
            FROM unnest(snapshot_commands, snapshot_ids, snapshot_versions, snapshot_topics,
                        snapshot_states) AS u(n, id, version, topic, state)
            WHERE u.n = c
            ON CONFLICT DO NOTHING;
            outcome := 'ok';
            positions := inserted;
        EXCEPTION
            WHEN SQLSTATE 'LC001' THEN
                outcome := 'conflict';
            WHEN unique_violation THEN
                outcome := 'idempotency-key-taken';
        END;
        RETURN NEXT;
    END LOOP;
    PERFORM pg_advisory_unlock(748200101);
    PERFORM pg_notify('ledger_events', '');
END;
$$;

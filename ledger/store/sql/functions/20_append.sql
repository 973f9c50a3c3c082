-- The write function: every event, idempotency claim and snapshot the ledger
-- records goes through here (ledger/store/commit.py calls it), a batch of commands
-- per call, each command succeeding or failing on its own; a lone command of one
-- event goes through append_one() instead (see the end of this header).
--
-- Ordering. Readers tail stored_events by notification_id and must never pass
-- over an event that commits after a later-numbered one. A call takes its
-- transaction id, its recorded_at and a block of notification ids for all its
-- events together, under one advisory lock held only for that: so notification
-- order = transaction-id order = recorded_at order. The inserts, their checks
-- and the commit with its fsync all run after the lock, in parallel with other
-- calls. Readers return only rows whose transaction is older than every running
-- one (ledger/store/event_store.py), so a row inserted after the lock, with the
-- id it was handed under it, is seen only once every older call has ended.
--
-- The ordering lock is the session's (a transaction's would be held until commit), so
-- nothing lets go of it by itself on an error: held on, it stalls every append until
-- the session ends. It is taken inside the block whose handler lets go of it, so that a
-- cancel or statement_timeout wherever it lands (also one that ends the lock's wait just
-- as the lock was granted: the error then comes with the lock held) finds the handler,
-- which lets go of the lock if pg_locks says this backend holds it, before the error
-- goes on; as newer_than_every_append() does. The pg_locks read is the handler's only.
--
-- No writer can stall the others. First, each command takes transaction locks
-- on its streams and claim keys with pg_try_advisory_xact_lock, never waiting:
-- a command whose stream or key another transaction is writing right now is
-- answered 'conflict' and decided again by its caller. Holding those locks, the
-- inserts below can only meet committed rows, so nothing here waits for another
-- session, and the ordering lock is held for no more than handing out ids.
--
-- Hash chain. Each event's hash covers the one before it in its stream (the
-- previous event of the same command, else the stored row, committed since we
-- hold the stream's lock). A command whose first event of a stream does not
-- follow a stored event (a gap) is a conflict.
--
-- Outcomes per command: 'ok' with its positions, 'conflict' (a version was
-- taken, the stream is busy, or it does not follow), 'claim-taken' (an
-- idempotency key, Stripe event id or hold settlement is recorded already).
-- The rows and claims of all commands go in with one statement each; only when
-- that meets a taken version or claim is each command written again on its own
-- (in a subtransaction), so that it alone fails.
--
-- No NOTIFY here: NOTIFY inside a transaction serialises every commit in the
-- cluster. The committer wakes readers after commit (ledger/store/commit.py).
--
-- A batch of one command of one event, at most one claim and no snapshot goes to
-- append_one() (21_append_one.sql) instead: the same protocol, cheaper to call.
-- A change to the protocol here is a change there too.
-- pg_temp last in its search_path: where it is not named, PostgreSQL searches a
-- session's temporary schema first, and a temporary table or sequence of the caller's
-- (stored_events_notification_id_seq, say) would stand in for the owner's.
--
-- Events and claims come as one array of rows, snapshots as another (append_row,
-- 19_append_rows.sql, says what a row holds and why), a command's rows in its events'
-- order; the first statement below takes them apart into the arrays the steps work on.
-- No snapshots may come as NULL (the committer sends it so: nearly every batch has none).
CREATE OR REPLACE FUNCTION append(
    commands int, write_rows append_row[], snapshot_rows append_row[]
) RETURNS TABLE (command int, outcome text, positions bigint[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
-- Its statements take arrays, whose lengths move PostgreSQL's estimates: left to choose,
-- it planned step 2's again on every call, dearer than running it.
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    event_commands int[];
    ids uuid[];
    versions bigint[];
    topics text[];
    states bytea[];
    claim_commands int[];
    claim_scopes text[];
    claim_keys text[];
    claim_hashes bytea[];
    claim_answers bytea[];
    row_order bigint[];
    event_count int;
    claim_count int;
    busy boolean[] := array_fill(false, ARRAY[commands]);
    previous bytea[] := '{}';
    hashes bytea[] := '{}';
    recorded timestamptz;
    txid xid8;
    wanted_ids int := 0;
    handed bigint[] := '{}';
    given int := 0;
    notification_ids bigint[] := '{}';
    wanted bigint;
    inserted bigint[];
    succeeded int[] := '{}';
    in_order boolean := true;
    all_at_once boolean;
    next_event int := 1;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'append() must be the first write of its transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- The rows taken apart, each kind in the rows' order. Without ORDER BY in each
    -- aggregate (ten sorts: ~70 us of a batch of 48 on PostgreSQL 15): one aggregation
    -- feeds every aggregate the same rows in the same sequence, the unnest's, and
    -- row_order checks that it is 1, 2, 3, ...
    SELECT array_agg(u.i),
           array_agg(u.n) FILTER (WHERE u.event), array_agg(u.id) FILTER (WHERE u.event),
           array_agg(u.version) FILTER (WHERE u.event), array_agg(u.topic) FILTER (WHERE u.event),
           array_agg(u.state) FILTER (WHERE u.event),
           array_agg(u.n) FILTER (WHERE u.claim), array_agg(u.scope) FILTER (WHERE u.claim),
           array_agg(u.name) FILTER (WHERE u.claim), array_agg(u.hash) FILTER (WHERE u.claim),
           array_agg(u.answer) FILTER (WHERE u.claim)
    INTO row_order, event_commands, ids, versions, topics, states,
         claim_commands, claim_scopes, claim_keys, claim_hashes, claim_answers
    FROM (SELECT r.*, num_nonnulls(r.id, r.version, r.topic, r.state) > 0 AS event,
                 num_nonnulls(r.scope, r.name, r.hash, r.answer) > 0 AS claim
          FROM unnest(write_rows) WITH ORDINALITY
              AS r(n, id, version, topic, state, scope, name, hash, answer, i)) u;
    IF coalesce(row_order, '{}')
       <> ARRAY(SELECT generate_series(1::bigint, cardinality(write_rows))) THEN
        RAISE EXCEPTION 'append() took its rows apart out of order';
    END IF;
    event_count := coalesce(cardinality(event_commands), 0);
    claim_count := coalesce(cardinality(claim_commands), 0);

    -- 1. Streams and keys, without waiting (see above). The locks hold until commit;
    --    a lock this transaction holds already is granted again at once.
    FOR i IN 1 .. event_count LOOP
        IF NOT busy[event_commands[i]]
           AND NOT pg_try_advisory_xact_lock(1, hashtext(ids[i]::text)) THEN
            busy[event_commands[i]] := true;
        END IF;
    END LOOP;
    FOR i IN 1 .. claim_count LOOP
        IF NOT busy[claim_commands[i]]
           AND NOT pg_try_advisory_xact_lock(2, hashtext(claim_scopes[i] || chr(31) || claim_keys[i])) THEN
            busy[claim_commands[i]] := true;
        END IF;
    END LOOP;

    -- 2. Each event's predecessor in its stream: NULL where it follows the event before
    --    it in the same command (chained to element i - 1 below), the genesis for a
    --    first event, else the stored row's hash, or an empty one where there is none (a
    --    gap: no hash is empty). One statement for all of them: a statement per event
    --    started an executor per event.
    SELECT coalesce(array_agg(
               CASE WHEN u.i > 1 AND u.n = event_commands[u.i - 1] AND u.id = ids[u.i - 1]
                         AND u.version = versions[u.i - 1] + 1 THEN NULL
                    WHEN u.version = 1 THEN decode(repeat('00', 32), 'hex')
                    ELSE coalesce((SELECT e.hash FROM stored_events e
                                   WHERE e.originator_id = u.id
                                     AND e.originator_version = u.version - 1), '')
               END ORDER BY u.i), '{}')
    INTO previous
    FROM unnest(event_commands, ids, versions) WITH ORDINALITY AS u(n, id, version, i);
    FOR i IN 1 .. event_count LOOP
        IF previous[i] = '' THEN
            busy[event_commands[i]] := true;  -- does not follow a stored event
        END IF;
    END LOOP;

    -- 3. Under the ordering lock: the transaction id, the time and the notification ids,
    --    and nothing else (the lock serialises every call in the cluster). Taken and let
    --    go of inside the block (the header says why).
    FOR i IN 1 .. event_count LOOP
        IF NOT busy[event_commands[i]] THEN
            wanted_ids := wanted_ids + 1;
        END IF;
    END LOOP;
    BEGIN
        PERFORM pg_advisory_lock(748200101);
        txid := pg_current_xact_id();  -- assigned here, in the order of the lock
        recorded := clock_timestamp();
        FOR i IN 1 .. wanted_ids LOOP
            handed := handed || nextval('stored_events_notification_id_seq');
        END LOOP;
        PERFORM pg_advisory_unlock(748200101);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(748200101)
        FROM pg_locks
        WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND classid = 0
          AND objid = 748200101 AND objsubid = 1 AND granted;
        RAISE;
    END;

    -- 4. Hashes, and the ids each event was handed.
    FOR i IN 1 .. event_count LOOP
        in_order := in_order AND (i = 1 OR event_commands[i] >= event_commands[i - 1]);
        IF busy[event_commands[i]] THEN
            hashes := hashes || NULL::bytea;
            notification_ids := notification_ids || NULL::bigint;
        ELSE
            hashes := hashes || event_hash(
                coalesce(previous[i], hashes[i - 1]), ids[i], versions[i], recorded, topics[i],
                states[i]);
            given := given + 1;
            notification_ids := notification_ids || handed[given];
        END IF;
    END LOOP;

    -- 5. Every command's rows and claims in one go. Only if a version or a claim turns
    --    out to be taken (a unique violation; none of it stays) is each command written
    --    on its own below, so that it alone fails.
    all_at_once := in_order;
    IF all_at_once THEN
        BEGIN
            INSERT INTO stored_events
                (originator_id, originator_version, topic, state, notification_id,
                 transaction_id, recorded_at, hash)
            SELECT u.id, u.version, u.topic, u.state, u.position, txid, recorded, u.hash
            FROM unnest(event_commands, ids, versions, topics, states, hashes, notification_ids)
                AS u(n, id, version, topic, state, hash, position)
            WHERE NOT busy[u.n];
            IF claim_count > 0 THEN
                INSERT INTO claims (scope, key, request_hash, response)
                SELECT u.scope, u.name, u.hash, u.answer
                FROM unnest(claim_commands, claim_scopes, claim_keys, claim_hashes, claim_answers)
                    AS u(n, scope, name, hash, answer)
                WHERE NOT busy[u.n];
            END IF;
        EXCEPTION WHEN unique_violation THEN
            all_at_once := false;
        END;
    END IF;
    IF all_at_once THEN
        FOR c IN 1 .. commands LOOP
            command := c;
            positions := '{}';
            WHILE next_event <= event_count AND event_commands[next_event] = c LOOP
                positions := positions || notification_ids[next_event];
                next_event := next_event + 1;
            END LOOP;
            IF busy[c] THEN
                outcome := 'conflict';
                positions := NULL;
            ELSE
                outcome := 'ok';
                succeeded := succeeded || c;
            END IF;
            RETURN NEXT;
        END LOOP;
    ELSE
        -- 6. One command at a time, each in a subtransaction of its own.
        FOR c IN 1 .. commands LOOP
            command := c;
            positions := NULL;
            IF busy[c] THEN
                outcome := 'conflict';
                RETURN NEXT;
                CONTINUE;
            END IF;
            BEGIN
                SELECT count(*) INTO wanted FROM unnest(event_commands) AS u(n) WHERE u.n = c;
                WITH rows AS (
                    INSERT INTO stored_events AS e
                        (originator_id, originator_version, topic, state, notification_id,
                         transaction_id, recorded_at, hash)
                    SELECT u.id, u.version, u.topic, u.state, u.position, txid, recorded, u.hash
                    FROM unnest(event_commands, ids, versions, topics, states, hashes,
                                notification_ids)
                        AS u(n, id, version, topic, state, hash, position)
                    WHERE u.n = c
                    ON CONFLICT ON CONSTRAINT stored_events_pkey DO NOTHING
                    RETURNING e.notification_id
                )
                SELECT coalesce(array_agg(notification_id ORDER BY notification_id), '{}')
                INTO inserted FROM rows;
                IF cardinality(inserted) <> wanted THEN
                    RAISE EXCEPTION 'version conflict in command %', c USING ERRCODE = 'LC001';
                END IF;
                INSERT INTO claims (scope, key, request_hash, response)
                SELECT u.scope, u.name, u.hash, u.answer
                FROM unnest(claim_commands, claim_scopes, claim_keys, claim_hashes, claim_answers)
                    AS u(n, scope, name, hash, answer)
                WHERE u.n = c;
                outcome := 'ok';
                positions := inserted;
                succeeded := succeeded || c;
            EXCEPTION
                WHEN SQLSTATE 'LC001' THEN
                    outcome := 'conflict';
                WHEN unique_violation THEN
                    outcome := 'claim-taken';
            END;
            RETURN NEXT;
        END LOOP;
    END IF;

    -- 7. Snapshots of the commands that committed.
    IF cardinality(snapshot_rows) > 0 THEN
        INSERT INTO snapshots (originator_id, originator_version, topic, state, event_recorded_at)
        SELECT u.id, u.version, u.topic, u.state, clock_timestamp()
        FROM unnest(snapshot_rows) AS u(n, id, version, topic, state, scope, name, hash, answer)
        WHERE u.n = ANY (succeeded)
        ON CONFLICT DO NOTHING;
    END IF;
END;
$$;

-- append() for a lone command of one event and at most one claim, without a snapshot:
-- a batch of one such command (ledger/store/commit.py sends it here) is what a lone
-- spend, hold or grant writes when nothing else is committing.
--
-- The same protocol as append() (20_append.sql, whose header says why each step is
-- there): the stream and the claim key taken with try-locks, never waiting (busy:
-- 'conflict'); the predecessor's hash read (none where one is due, a gap: 'conflict');
-- the transaction id, recorded_at and the position handed out under the ordering lock,
-- and nothing else, the lock taken inside the block whose handler lets go of it if this
-- backend holds it (so that a cancel wherever it lands leaves it held by nobody); the
-- event sealed with event_hash() and inserted with its claim; a taken version is
-- 'conflict', a taken claim 'claim-taken', and then nothing stays.
--
-- pg_temp is last in its search_path, as in append() (20_append.sql says why).
--
-- Why a function of its own: append()'s shape, then fifteen arrays and a count in and a table out,
-- cost more than the protocol does. One command a call, 8 and 32 clients, against
-- plain INSERT transactions: append() 0.54-0.63x, this function 1.01-1.03x, the
-- same run (bench/README.md).
CREATE OR REPLACE FUNCTION append_one(
    id uuid, version bigint, topic text, state bytea,
    claim_scope text, claim_key text, claim_hash bytea, claim_answer bytea,
    OUT outcome text, OUT given bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    previous bytea;
    recorded timestamptz;
    txid xid8;
    taken text;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'append_one() must be the first write of its transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    outcome := 'conflict';

    IF NOT pg_try_advisory_xact_lock(1, hashtext(id::text))
       OR (claim_key IS NOT NULL
           AND NOT pg_try_advisory_xact_lock(2, hashtext(claim_scope || chr(31) || claim_key)))
    THEN
        RETURN;  -- busy
    END IF;

    IF version = 1 THEN
        previous := decode(repeat('00', 32), 'hex');
    ELSE
        SELECT e.hash INTO previous FROM stored_events e
        WHERE e.originator_id = id AND e.originator_version = version - 1;
        IF previous IS NULL THEN
            RETURN;  -- does not follow a stored event
        END IF;
    END IF;

    BEGIN
        PERFORM pg_advisory_lock(748200101);
        txid := pg_current_xact_id();  -- assigned here, in the order of the lock
        recorded := clock_timestamp();
        given := nextval('stored_events_notification_id_seq');
        PERFORM pg_advisory_unlock(748200101);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(748200101)
        FROM pg_locks
        WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND classid = 0
          AND objid = 748200101 AND objsubid = 1 AND granted;
        RAISE;
    END;

    BEGIN
        INSERT INTO stored_events
            (originator_id, originator_version, topic, state, notification_id,
             transaction_id, recorded_at, hash)
        VALUES (id, version, topic, state, given, txid, recorded,
                event_hash(previous, id, version, recorded, topic, state));
        IF claim_key IS NOT NULL THEN
            INSERT INTO claims (scope, key, request_hash, response)
            VALUES (claim_scope, claim_key, claim_hash, claim_answer);
        END IF;
        outcome := 'ok';
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS taken = TABLE_NAME;
        IF taken = 'claims' THEN
            outcome := 'claim-taken';
        END IF;
        given := NULL;
    END;
END;
$$;

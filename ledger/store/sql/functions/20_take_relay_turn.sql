-- A relay's turn (relay/positions.py): true once this transaction holds it, false while
-- another relay of that name has it. Two relays on one database take turns batch by batch;
-- the turn ends with the transaction. The owner's, as the advisory lock functions are since
-- set-up took them from PUBLIC: a role that could take any advisory lock could hold the one
-- every append waits for (ledger/store/sql/advisory_locks.sql). Two-key locks are a key
-- space of their own, apart from the store's one-key locks.
CREATE OR REPLACE FUNCTION take_relay_turn(relay text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT pg_try_advisory_xact_lock(748200102, hashtext(relay));
$$;

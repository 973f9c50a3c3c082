-- A transaction id newer than every append that took its time, and the database's time then
-- (the as-of wait, ledger/store/event_store.py): read under the ordering lock, which
-- append() and append_one() hold while they take their transaction id and recorded_at, so
-- every append after it records a later time.
--
-- The lock is taken and let go of inside this call, never left to the caller: a
-- transaction's lock, held until the caller's transaction ends, let a role that calls this
-- in a transaction it keeps open stall every append. Taken inside the block, so that a
-- cancel wherever it lands finds the handler, which lets go of the lock if it was granted
-- (a session's lock outlives the block's rollback) before the error goes on. The owner's,
-- as the advisory lock functions are (ledger/store/sql/advisory_locks.sql).
CREATE OR REPLACE FUNCTION newer_than_every_append(OUT transaction_id xid8, OUT at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    BEGIN
        PERFORM pg_advisory_lock(748200101);
        transaction_id := pg_current_xact_id();
        at := clock_timestamp();
        PERFORM pg_advisory_unlock(748200101);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(748200101)
        FROM pg_locks
        WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND classid = 0
          AND objid = 748200101 AND objsubid = 1 AND granted;
        RAISE;
    END;
END;
$$;

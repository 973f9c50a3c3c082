-- Every advisory lock this session holds, let go of: what a writer of the service runs
-- after a failed batch (ledger/store/commit.py). append() and append_one() hold the ordering
-- lock as their caller's session's while they hand out positions and let go of it on their
-- own errors; a cancel that lands after the lock is granted and before their handler is
-- entered leaves it held on a pooled connection, and every append would wait on it. Only
-- this session's locks: nobody else's are touched. The owner's, as pg_advisory_unlock_all()
-- is since set-up took the advisory lock functions from PUBLIC (advisory_locks.sql).
CREATE OR REPLACE FUNCTION let_go_of_advisory_locks() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT pg_advisory_unlock_all();
$$;

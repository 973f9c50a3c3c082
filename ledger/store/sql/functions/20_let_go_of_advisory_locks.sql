-- Every advisory lock this session holds, let go of: what a writer of the service runs
-- after a failed batch (ledger/store/commit.py). append() and append_one() hold the ordering
-- lock as their caller's session's while they hand out positions; they take it inside the
-- block whose handler lets go of it, so that their errors and a cancel wherever it lands
-- leave it held by nobody (20_append.sql). What they cannot cover is a second interrupt (a cancel,
-- a statement_timeout) that lands in that handler before it lets go: the lock stays held on a
-- pooled connection, and every append would wait on it. Only this session's locks: nobody
-- else's are touched. The owner's, as pg_advisory_unlock_all()
-- is since set-up took the advisory lock functions from PUBLIC (advisory_locks.sql).
CREATE OR REPLACE FUNCTION let_go_of_advisory_locks() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT pg_advisory_unlock_all();
$$;

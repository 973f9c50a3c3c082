-- The reconciler's turn (api/reconcile.py): one process of the service reconciles at a
-- time. True once this session holds it, false while another has it; let go of with
-- let_go_of_reconcile_turn(), or by the session's end. The owner's, as the advisory lock
-- functions are (ledger/store/sql/advisory_locks.sql); a session that keeps it holds up
-- reconciling only, never a write.
CREATE OR REPLACE FUNCTION take_reconcile_turn() RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT pg_try_advisory_lock(748200117);
$$;

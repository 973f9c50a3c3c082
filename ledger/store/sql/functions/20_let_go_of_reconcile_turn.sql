-- The reconciler's turn given back (take_reconcile_turn()): false if this session did not
-- hold it.
CREATE OR REPLACE FUNCTION let_go_of_reconcile_turn() RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT pg_advisory_unlock(748200117);
$$;

-- The advisory lock functions, taken from PUBLIC and left to ledger_owner, at every set-up.
--
-- Every append waits for the ordering lock (748200101) and takes its streams and claim
-- keys with try-locks (1, hashtext(id)), (2, hashtext(scope, key)) (20_append.sql). Any role
-- that may call pg_advisory_lock() may hold one of them for as long as its session lives:
-- every append in the ledger waits, or every command on one account is refused. So no
-- login role calls them; append(), append_one() and the turns the roles need
-- (take_relay_turn(), take_reconcile_turn(), newer_than_every_append(), …) are
-- ledger_owner's functions, run as the owner.
--
-- Run as the set-up's role, not as ledger_owner: only a superuser (or the functions'
-- owner) may, and ledger/store/migrate.py says so once where it may not (a managed
-- PostgreSQL). Function privileges are each database's own (pg_catalog is copied into
-- every database): other databases on the server keep PostgreSQL's defaults. Every
-- signature, the unlocking ones too: a role that takes no lock has none to let go of.
DO $$
DECLARE
    lock_function text;
BEGIN
    FOR lock_function IN
        SELECT format('pg_catalog.%I(%s)', p.proname, pg_get_function_identity_arguments(p.oid))
        FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND (p.proname LIKE 'pg\_advisory\_%' OR p.proname LIKE 'pg\_try\_advisory\_%')
    LOOP
        EXECUTE format(
            'REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC, ledger_service, ledger_projector, '
            'ledger_relay', lock_function);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO ledger_owner', lock_function);
    END LOOP;
END;
$$;

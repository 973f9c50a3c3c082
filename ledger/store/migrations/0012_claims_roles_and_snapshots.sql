-- The registry of idempotency keys also holds Stripe event ids, payment-intent
-- links and hold settlements: everything a command claims once. Its name says so.
ALTER TABLE IF EXISTS idempotency_keys RENAME TO claims;
ALTER INDEX IF EXISTS idempotency_keys_pkey RENAME TO claims_pkey;

-- One write function (sql/functions/20_append.sql) replaces these.
DROP FUNCTION IF EXISTS append_events(uuid[], bigint[], text[], bytea[]);
DROP FUNCTION IF EXISTS append_batch(
    int, int[], uuid[], bigint[], text[], bytea[], int[], text[], text[], bytea[], bytea[],
    int[], uuid[], bigint[], text[], bytea[]);
DROP FUNCTION IF EXISTS chain_hashes(int[], uuid[], bigint[], text[], bytea[], timestamptz);

-- Snapshots are on the trusted path (loads start from them): append-only too.
DROP TRIGGER IF EXISTS snapshots_no_update_or_delete ON snapshots;
CREATE TRIGGER snapshots_no_update_or_delete
    BEFORE UPDATE OR DELETE ON snapshots
    FOR EACH ROW EXECUTE FUNCTION stored_events_are_append_only();
DROP TRIGGER IF EXISTS snapshots_no_truncate ON snapshots;
CREATE TRIGGER snapshots_no_truncate
    BEFORE TRUNCATE ON snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION stored_events_are_append_only();

-- The streams of an account: its own and its Checkout sessions' (their first
-- events name the account), for GET /v1/accounts/{id}/events.
CREATE INDEX IF NOT EXISTS stored_events_account_streams_idx
    ON stored_events (event_account_id(state)) WHERE originator_version = 1;

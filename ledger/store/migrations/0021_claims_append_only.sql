-- Claims are facts too: a Stripe event applied, an idempotency key's first answer, a
-- payment intent's session, a hold's settlement. Deleting one would let its command be
-- applied twice; changing one would answer a retry, or route a refund, as it says.
-- Append-only, as the events and snapshots are (0001, 0012).
DROP TRIGGER IF EXISTS claims_no_update_or_delete ON claims;
CREATE TRIGGER claims_no_update_or_delete
    BEFORE UPDATE OR DELETE ON claims
    FOR EACH ROW EXECUTE FUNCTION stored_events_are_append_only();
DROP TRIGGER IF EXISTS claims_no_truncate ON claims;
CREATE TRIGGER claims_no_truncate
    BEFORE TRUNCATE ON claims
    FOR EACH STATEMENT EXECUTE FUNCTION stored_events_are_append_only();

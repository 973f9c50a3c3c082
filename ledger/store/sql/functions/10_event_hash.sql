-- The hash that seals one event: it covers the event and the hash of the one
-- before it in its stream, so changing or removing an event breaks the chain.
--
-- hash = sha256(previous hash (32 zero bytes for version 1) || originator_id (16 bytes)
--               || originator_version (int8) || recorded_at (int8 microseconds since 2000)
--               || length of topic (int4) || topic (UTF-8) || state)
--
-- ledger/store/hash_chain.py computes the same in Python, for the audit.
--
-- STABLE, as convert_to is: a SQL function whose body is no more volatile than
-- it is declared is inlined where it is called. Declared IMMUTABLE, it was not,
-- and each transaction that called it (every append()) parsed and planned the
-- body again: ~45 us of a one-command append() on two cores.
CREATE OR REPLACE FUNCTION event_hash(
    previous bytea, id uuid, version bigint, recorded timestamptz, topic text, state bytea
) RETURNS bytea
LANGUAGE sql STABLE STRICT AS $$
    SELECT sha256(
        previous || uuid_send(id) || int8send(version) || timestamptz_send(recorded)
        || int4send(octet_length(convert_to(topic, 'UTF8'))) || convert_to(topic, 'UTF8') || state
    )
$$;

-- The account a stream's first event names (an account's AccountOpened, a
-- Checkout session's CheckoutRequested), for the index that finds every
-- stream of an account. Immutable because the database's encoding is UTF-8
-- and never changes; convert_from itself is only marked stable.
CREATE OR REPLACE FUNCTION event_account_id(state bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT convert_from(state, 'UTF8')::jsonb ->> 'account_id'
$$;

-- The account a stream's first event names (an account's AccountOpened, a
-- Checkout session's CheckoutRequested), for the index that finds every
-- stream of an account. Immutable because the database's encoding is UTF-8
-- and never changes; convert_from itself is only marked stable.
--
-- PL/pgSQL, not SQL: PostgreSQL inlines a SQL function into the expression of
-- the index, and prepares an index's expressions again for every statement that
-- inserts a row the index takes (a stream's first event), parsing and planning
-- the body each time: ~30 us of every append() that opens a stream (a
-- purchase's, an account's). PL/pgSQL plans it once per session.
CREATE OR REPLACE FUNCTION event_account_id(state bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN convert_from(state, 'UTF8')::jsonb ->> 'account_id';
END
$$;

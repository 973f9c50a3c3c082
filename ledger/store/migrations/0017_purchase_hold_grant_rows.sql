-- The purchases, holds and grants views write their rows as one array of records too
-- (see 0016): one INSERT ... SELECT FROM unnest for a batch's rows, where executemany ran
-- the upsert once a row. Each type's attributes are its view's row (PurchaseRow, HoldRow,
-- GrantRow), in their order; tests/integration/test_view_rows.py holds them to the
-- Structs and to the tables.
CREATE TYPE purchase_row AS (
    session_id text,
    stream_id uuid,
    account_id text,
    credits bigint,
    amount bigint,
    currency text,
    status text,
    needs_review boolean,
    amount_refunded bigint,
    credits_clawed_back bigint,
    credits_reversed bigint,
    position bigint,
    created_at timestamptz,
    updated_at timestamptz,
    paid_at timestamptz
);

CREATE TYPE hold_row AS (
    hold_id text,
    stream_id uuid,
    amount bigint,
    captured bigint,
    released bigint,
    status text,
    reason text,
    expires_at timestamptz,
    placed_at timestamptz,
    settled_at timestamptz,
    position bigint
);

CREATE TYPE grant_row AS (
    grant_id text,
    stream_id uuid,
    amount bigint,
    remaining bigint,
    priority integer,
    expires_at timestamptz,
    reason text,
    status text,
    granted_at timestamptz,
    closed_at timestamptz,
    position bigint
);

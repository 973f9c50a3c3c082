-- The rows the balances and notifications views write in one statement, sent as one
-- array of records instead of an array per column: asyncpg checks each element of an
-- array parameter against collections.abc's ABCs in Python, about fourteen checks a row
-- across eleven column arrays against three for a record (projections/balances.py). Each
-- type's attributes are its view's row (BalanceRow, NotifierState), in their order;
-- tests/integration/test_view_rows.py holds them to the Structs and to the tables.
CREATE TYPE balance_row AS (
    account_id text,
    stream_id uuid,
    monthly_allowance bigint,
    next_monthly_allowance bigint,
    allowance_remaining bigint,
    topup_balance bigint,
    held bigint,
    period text,
    position bigint,
    updated_at timestamptz,
    granted bigint
);

CREATE TYPE notifier_row AS (
    stream_id uuid,
    account_id text,
    monthly_allowance bigint,
    allowance_remaining bigint,
    topup_balance bigint,
    held bigint,
    threshold bigint,
    low_armed boolean,
    depleted_armed boolean,
    position bigint,
    granted bigint
);

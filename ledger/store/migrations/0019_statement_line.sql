-- The statement view's lines as one array of records, as 0016 and 0017 did for the other
-- views: the live projector writes every view's rows of a batch in one statement
-- (projections/writes.py), where the statement view sent its lines with COPY, which
-- cannot be part of one. Its attributes are statement_lines' columns, in order
-- (projections/statement.py's _COLUMNS; tests/integration/test_view_rows.py).
CREATE TYPE statement_line AS (
    account_id text,
    position bigint,
    stream_id uuid,
    version bigint,
    type text,
    amount bigint,
    allowance_change bigint,
    topup_change bigint,
    allowance_after bigint,
    topup_after bigint,
    balance_after bigint,
    description text,
    recorded_at timestamptz,
    granted_change bigint,
    granted_after bigint
);

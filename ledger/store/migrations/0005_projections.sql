-- Read models. Each is written only by its projection, which commits the
-- view's rows and its position in the same transaction (exactly once).
CREATE TABLE IF NOT EXISTS projection_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS balances (
    account_id text PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    monthly_allowance bigint NOT NULL,
    next_monthly_allowance bigint NOT NULL,
    allowance_remaining bigint NOT NULL,
    topup_balance bigint NOT NULL,
    period text NOT NULL,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS purchases (
    session_id text PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    account_id text NOT NULL,
    credits bigint NOT NULL,
    amount bigint NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    needs_review boolean NOT NULL DEFAULT false,
    amount_refunded bigint NOT NULL DEFAULT 0,
    credits_clawed_back bigint NOT NULL DEFAULT 0,
    position bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    paid_at timestamptz
);
CREATE INDEX IF NOT EXISTS purchases_account_idx ON purchases (account_id, position DESC);

CREATE TABLE IF NOT EXISTS statement_lines (
    account_id text NOT NULL,
    position bigint NOT NULL,
    stream_id uuid NOT NULL,
    version bigint NOT NULL,
    type text NOT NULL,
    amount bigint NOT NULL,
    allowance_change bigint NOT NULL,
    topup_change bigint NOT NULL,
    allowance_after bigint NOT NULL,
    topup_after bigint NOT NULL,
    balance_after bigint NOT NULL,
    description text NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, position),
    UNIQUE (stream_id, version)
);

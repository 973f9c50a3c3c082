-- API tokens: only the SHA-256 of each token is stored.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id text PRIMARY KEY,
    token_hash bytea NOT NULL,
    scope text NOT NULL CHECK (scope IN ('credits', 'ledger:write', 'ledger:audit')),
    account_id text,
    name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK ((scope = 'credits') = (account_id IS NOT NULL))
);

-- The first answer to each idempotent request, written in the same
-- transaction as the request's events, so that a retry gets that answer.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope text NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    response bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

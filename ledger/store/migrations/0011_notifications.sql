-- Outbound notifications: who subscribes, what each account's alerts last saw,
-- what is to be delivered and every attempt made.
--
-- The event store stays the source of truth. The `notifications` projection
-- derives deliveries from the events and commits them together with its
-- position (projections/notifications.py), so each event's notifications are
-- created exactly once; the dispatcher (ledger/notifications/dispatcher.py)
-- sends them and records each attempt.

-- A receiver. The secret is kept as it is, not hashed: HMAC-SHA256 needs the
-- key itself to sign each delivery (a hash of it could only check, not sign).
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint_id text PRIMARY KEY,
    url text NOT NULL,
    event_types text[] NOT NULL,
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    disabled_at timestamptz
);

-- Per account, what the alerts need: the buckets after the last event, the
-- account's own threshold (NULL: 10 % of its monthly allowance) and whether
-- each alert may fire again (armed) or already fired for this crossing.
CREATE TABLE IF NOT EXISTS notifier_accounts (
    stream_id uuid PRIMARY KEY,
    account_id text NOT NULL,
    monthly_allowance bigint NOT NULL,
    allowance_remaining bigint NOT NULL,
    topup_balance bigint NOT NULL,
    held bigint NOT NULL,
    threshold bigint,
    low_armed boolean NOT NULL,
    depleted_armed boolean NOT NULL,
    position bigint NOT NULL
);

-- One notification to one endpoint. `payload` is exactly the body that is
-- signed and sent, the same on every attempt. The unique key makes the
-- projection's inserts idempotent (a rebuild of the view sends nothing twice).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id bigserial PRIMARY KEY,
    notification_id text NOT NULL,
    event_type text NOT NULL,
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    account_id text NOT NULL,
    position bigint NOT NULL,
    payload text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0,
    -- How many of the backoff schedule's delays have been used up.
    schedule_step integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at timestamptz,
    last_error text,
    UNIQUE (notification_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint_idx
    ON webhook_deliveries (endpoint_id, delivery_id);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    status_code integer,
    error text,
    PRIMARY KEY (delivery_id, attempt)
);

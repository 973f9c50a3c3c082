-- POST /v1/webhook-endpoints takes an optional Idempotency-Key: a retry after a lost
-- answer gets the first endpoint (and its secret) again instead of a second endpoint
-- that would receive every notification twice. The request's hash tells a repeat from
-- a key used for another request.
ALTER TABLE webhook_endpoints ADD COLUMN IF NOT EXISTS idempotency_key text;
ALTER TABLE webhook_endpoints ADD COLUMN IF NOT EXISTS request_hash bytea;
CREATE UNIQUE INDEX IF NOT EXISTS webhook_endpoints_by_idempotency_key
    ON webhook_endpoints (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The deliveries whose retries ran out, counted on every /metrics scrape
-- (ledger_webhook_deliveries_failed): few, so a small index of their own.
CREATE INDEX IF NOT EXISTS webhook_deliveries_failed_idx
    ON webhook_deliveries (created_at) WHERE status = 'failed';

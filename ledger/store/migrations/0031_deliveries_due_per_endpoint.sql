-- The dispatcher claims each live endpoint's oldest due deliveries, as many as the
-- endpoint's share of its requests leaves room for (ledger/notifications/outbox.py,
-- claim_due): one short scan per endpoint, where passing over the due deliveries of an
-- endpoint at its share (a receiver that hangs, with its backlog) in the due index read
-- them all at every claim.
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint_due_idx
    ON webhook_deliveries (endpoint_id, next_attempt_at, delivery_id) WHERE status = 'pending';

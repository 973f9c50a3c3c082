-- Stripe event ids and payment-intent links become keys in idempotency_keys,
-- claimed in the same group-committed command as the events they go with
-- (see append_batch in 0007). Scopes: 'stripe-event' (answer empty) and
-- 'payment-intent' (answer: the Checkout session id, UTF-8).
INSERT INTO idempotency_keys (scope, key, request_hash, response, created_at)
SELECT 'stripe-event', event_id, sha256(convert_to(event_type, 'UTF8')), '\x', processed_at
FROM processed_stripe_events
ON CONFLICT DO NOTHING;

INSERT INTO idempotency_keys (scope, key, request_hash, response)
SELECT 'payment-intent', payment_intent, '\x', convert_to(session_id, 'UTF8')
FROM checkout_payment_intents
ON CONFLICT DO NOTHING;

DROP TABLE IF EXISTS processed_stripe_events;
DROP TABLE IF EXISTS checkout_payment_intents;

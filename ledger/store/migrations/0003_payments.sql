-- Stripe event ids already applied: a redelivered event is answered and skipped.
-- Written in the same transaction as the events the Stripe event caused.
CREATE TABLE IF NOT EXISTS processed_stripe_events (
    event_id text PRIMARY KEY,
    event_type text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Which Checkout session a payment intent paid, for refunds and disputes,
-- which name only the payment intent. Derived from CheckoutPaid events.
CREATE TABLE IF NOT EXISTS checkout_payment_intents (
    payment_intent text PRIMARY KEY,
    session_id text NOT NULL
);

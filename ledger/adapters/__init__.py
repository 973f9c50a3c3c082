"""Adapters: how the ledger talks to Stripe (the gateway) and reads what Stripe sends (webhooks)."""

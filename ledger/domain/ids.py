"""Deterministic aggregate ids: the same business key always names the same stream."""

from __future__ import annotations

from functools import lru_cache
from uuid import NAMESPACE_URL, UUID, uuid5

_NAMESPACE = uuid5(NAMESPACE_URL, "https://credit-ledger.invalid/aggregates")


@lru_cache(maxsize=100_000)
def account_stream_id(account_id: str) -> UUID:
    """The stream of the credit account called ``account_id``."""
    return uuid5(_NAMESPACE, f"account/{account_id}")


@lru_cache(maxsize=100_000)
def checkout_stream_id(session_id: str) -> UUID:
    """The stream of the Stripe Checkout session ``session_id``."""
    return uuid5(_NAMESPACE, f"checkout/{session_id}")


@lru_cache(maxsize=100_000)
def payment_intent_stream_id(payment_intent: str) -> UUID:
    """The stream of the Stripe payment intent ``payment_intent``."""
    return uuid5(_NAMESPACE, f"payment-intent/{payment_intent}")

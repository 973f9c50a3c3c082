"""A Stripe Checkout session for a one-time top-up, from request to outcome."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.ids import checkout_stream_id


class CheckoutSession(Aggregate):
    """One Checkout session; its stream decides, once, what a payment is worth."""

    @staticmethod
    def create_id(session_id: str, **_: Any) -> UUID:
        return checkout_stream_id(session_id)

    @event("CheckoutRequested")
    def __init__(
        self,
        session_id: str,
        account_id: str,
        credits: int,
        amount: int,
        currency: str,
        checkout_url: str,
        expires_at: int,
    ) -> None:
        self.session_id = session_id
        self.account_id = account_id
        self.credits = credits
        self.amount = amount
        self.currency = currency
        self.checkout_url = checkout_url
        self.expires_at = expires_at
        self.status = "pending"

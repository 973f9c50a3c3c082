"""The ports the application services see the outside world through."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import msgspec

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class CheckoutRequest(msgspec.Struct, frozen=True):
    """What the ledger asks the payment provider to sell."""

    account_id: str
    credits: int
    unit_amount: int
    currency: str
    success_url: str
    cancel_url: str
    expires_at: int
    idempotency_key: str


class CreatedCheckout(msgspec.Struct, frozen=True):
    """The hosted checkout the provider created."""

    session_id: str
    url: str
    amount_total: int
    currency: str
    expires_at: int


class PaymentGatewayError(Exception):
    """The payment provider could not be reached or refused the request."""


class PaymentGateway(Protocol):
    """Creates hosted checkouts (Stripe in production, its stand-in in development)."""

    async def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        """Create a one-time payment checkout; raise PaymentGatewayError on failure."""
        ...

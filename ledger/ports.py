"""The ports the application services see the outside world through."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from ledger.payment_events import PaymentEvent

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
    replayed: bool = False
    """Made by an earlier request under the same idempotency key, answered again (Stripe's
    ``Idempotent-Replayed: true``), not made by this one."""


class PaymentGatewayError(Exception):
    """The payment provider could not be reached or refused the request."""


class CheckoutMispriced(PaymentGatewayError):
    """The provider made a session for another amount or currency than the credits cost
    (a coupon, a price or tax set up at the provider, another account): the ledger expires
    it and records nothing."""


class CheckoutKeyUsed(PaymentGatewayError):
    """The provider made no session for this idempotency key: it used the key before, with
    other parameters (``other_parameters``), or for this very request and failed, and it
    answers that failure again to every retry under the key."""

    def __init__(self, message: str, *, other_parameters: bool) -> None:
        super().__init__(message)
        self.other_parameters = other_parameters


class PaymentGateway(Protocol):
    """Creates hosted checkouts (Stripe in production, its stand-in in development)."""

    async def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        """Create a one-time payment checkout; raise PaymentGatewayError on failure."""
        ...

    async def expire_checkout(self, session_id: str) -> None:
        """Expire an open checkout so that nobody can pay it; raise PaymentGatewayError on
        failure (a session no longer open is one)."""
        ...


class FoundCheckout(msgspec.Struct, frozen=True, kw_only=True):
    """A Checkout session as the payment provider reports it now (reconciliation).

    ``state`` is ``open``, ``processing`` (a delayed payment under way), ``paid``,
    ``failed``, ``expired`` or ``unknown`` (the provider has no such session).
    When the state is one the ledger acts on, ``event_type`` and ``meaning`` are
    the event the provider would have delivered for it, with an event id of its
    own that is the same every time the same state is found.
    """

    session_id: str
    state: str
    event_type: str | None = None
    meaning: PaymentEvent | None = None


class CheckoutLookup(Protocol):
    """Asks the payment provider how a Checkout session stands."""

    async def look_up_checkout(self, session_id: str) -> FoundCheckout:
        """The session's state; raise PaymentGatewayError when the provider cannot say."""
        ...

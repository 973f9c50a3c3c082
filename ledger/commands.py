"""Every command the ledger takes: what a caller asks, in the imperative.

``at`` is the command's time, stamped by ``Ledger.execute`` from its clock when
the caller leaves it out; decisions use it (never the clock), so a command is
decided the same way however late its commit is retried, and every event its
decision records tells that time (``ledger.domain.events.command_time``), unless a
stream it writes to told a later one already: a stream's times never go back, so the
command is then decided at that later time (``ledger.unit_of_work``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from ledger.payment_events import PaymentEvent


class OpenAccount(msgspec.Struct, frozen=True, kw_only=True):
    """Open an account with its plan's full allowance for the current period."""

    account_id: str
    monthly_allowance: int
    at: datetime | None = None


class SpendCredits(msgspec.Struct, frozen=True, kw_only=True):
    """Take ``amount`` credits from an account, once per idempotency key."""

    account_id: str
    amount: int
    reason: str
    idempotency_key: str
    at: datetime | None = None


class ResetMonth(msgspec.Struct, frozen=True, kw_only=True):
    """Give the account its plan's allowance for ``period`` (default: the month of ``at``);
    with an idempotency key, a repeat gets the first answer."""

    account_id: str
    period: str | None = None
    idempotency_key: str | None = None
    at: datetime | None = None


class ChangeAllowance(msgspec.Struct, frozen=True, kw_only=True):
    """Change the plan's allowance from the next reset on."""

    account_id: str
    monthly_allowance: int


class SetLowBalanceThreshold(msgspec.Struct, frozen=True, kw_only=True):
    """Set below which ``available`` counts as low (None: 10 % of the allowance)."""

    account_id: str
    threshold: int | None
    at: datetime | None = None


class PlaceHold(msgspec.Struct, frozen=True, kw_only=True):
    """Reserve ``amount`` credits for ``expires_in_seconds``, once per idempotency key."""

    account_id: str
    amount: int
    expires_in_seconds: int
    reason: str
    idempotency_key: str
    at: datetime | None = None


HoldOutcome = Literal["captured", "released", "expired"]


class SettleHold(msgspec.Struct, frozen=True, kw_only=True):
    """Capture ``amount`` of a hold (the rest goes back), release it, or record its expiry.

    A repeat of the same settlement (same outcome, amount and idempotency key)
    gets the first answer, and so does a release of a hold released or expired (under any
    key: its credits went back, as a release asks); any other settlement of a settled hold
    is refused.
    """

    account_id: str
    hold_id: str
    outcome: HoldOutcome
    amount: int = 0
    idempotency_key: str | None = None
    at: datetime | None = None


class GrantCredits(msgspec.Struct, frozen=True, kw_only=True):
    """Give an account credits that are not bought, once per idempotency key."""

    account_id: str
    amount: int
    priority: int
    expires_at: datetime | None
    reason: str
    idempotency_key: str
    at: datetime | None = None


class VoidGrant(msgspec.Struct, frozen=True, kw_only=True):
    """Withdraw a grant: what remains of it lapses now; with an idempotency key, a repeat
    gets the first answer (without one, a repeat is refused: the grant is closed)."""

    account_id: str
    grant_id: str
    reason: str
    idempotency_key: str | None = None
    at: datetime | None = None


class ExpireGrant(msgspec.Struct, frozen=True, kw_only=True):
    """Record the expiry of a grant that reached it (the sweeper's command)."""

    account_id: str
    grant_id: str
    at: datetime | None = None


class RecordCheckout(msgspec.Struct, frozen=True, kw_only=True):
    """Record a Checkout session created at the payment provider (CheckoutRequested)."""

    account_id: str
    credits: int
    session_id: str
    checkout_url: str
    amount: int
    currency: str
    expires_at: int
    idempotency_key: str | None = None


class ApplyPaymentEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Apply one verified Stripe event, once per event id (``meaning`` None: nothing to do)."""

    event_id: str
    event_type: str
    meaning: PaymentEvent | None
    unit_amount: int
    currency: str
    at: datetime | None = None

"""Every request body and answer the client sends and reads, as msgspec Structs.

Each mirrors a schema of the service's OpenAPI document (``GET /schema/openapi.json``)
field for field and type for type, under the same name; the main project's test
suite compares them, so a change on either side fails it. The service checks
values (ranges, patterns) and answers 422; these types only give them their shapes.

Answers ignore fields they do not know, so a service that adds one does not break
a deployed client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

EventType = Literal[
    "credits.purchased",
    "credits.spent",
    "credits.low_balance",
    "credits.depleted",
    "hold.expired",
    "credits.granted",
    "grant.expired",
]
"""What a webhook endpoint may subscribe to."""

HoldStatus = Literal["held", "captured", "released", "expired"]

GrantStatus = Literal["active", "expired", "voided", "all"]
"""The ``status`` filter of ``list_grants``."""


class _Request(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A body: optional fields left at their default are not sent (the service's applies)."""


# --- requests ------------------------------------------------------------------------------


class OpenAccountRequest(_Request, frozen=True):
    account_id: str
    monthly_allowance: int | None = None


class SpendRequest(_Request, frozen=True):
    amount: int
    reason: str | None = None


class PlaceHoldRequest(_Request, frozen=True):
    amount: int
    expires_in_seconds: int | None = None
    reason: str | None = None


class CaptureHoldRequest(_Request, frozen=True):
    amount: int


class MonthlyResetRequest(_Request, frozen=True):
    period: str | None = None


class ChangePlanRequest(_Request, frozen=True):
    monthly_allowance: int


class ThresholdRequest(_Request, frozen=True):
    threshold: int | None
    """null goes back to the default (10 % of the monthly allowance)."""


class GrantRequest(_Request, frozen=True):
    amount: int
    expires_at: datetime | None = None
    priority: int | None = 50
    """null: the service's default (50), as when left out."""
    reason: str | None = None


class VoidGrantRequest(_Request, frozen=True):
    reason: str | None = None


class WebhookEndpointRequest(_Request, frozen=True):
    url: str
    events: list[EventType]


class PurchaseRequest(_Request, frozen=True):
    credits: int


# --- answers -------------------------------------------------------------------------------


class AccountCredits(msgspec.Struct, frozen=True, kw_only=True):
    """``balance = allowance_remaining + granted + topup_balance``; ``available = balance - held``."""

    account_id: str
    balance: int
    monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    period: str
    held: int
    available: int
    granted: int


class AccountPlan(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    monthly_allowance: int
    next_monthly_allowance: int
    period: str


class Spent(msgspec.Struct, frozen=True, kw_only=True):
    """A spend and the balances after it; ``from_grants`` maps grant ids to credits taken."""

    account_id: str
    amount: int
    from_allowance: int
    from_topup: int
    reason: str
    balance: int
    allowance_remaining: int
    topup_balance: int
    monthly_allowance: int
    period: str
    held: int = 0
    available: int = -1
    from_grants: dict[str, int] = msgspec.field(default_factory=dict)
    granted: int = 0


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    """A hold as it stands, with the account's balances after the call."""

    hold_id: str
    account_id: str
    status: HoldStatus
    amount: int
    captured: int
    released: int
    reason: str
    expires_at: str
    balance: int
    held: int
    available: int
    lapsed: int | None = None
    """Of ``released``, what ended instead of coming back (an allowance share carried over a
    reset, shares of grants closed meanwhile); None from a server, or an answer, before it."""


class GrantAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A new grant (or the first answer to its key) and the balances after it."""

    grant_id: str
    account_id: str
    amount: int
    remaining: int
    priority: int
    expires_at: str | None
    reason: str
    status: str
    balance: int
    granted: int
    available: int


class GrantClosedAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A voided (or expired) grant: ``lapsed`` is what ended now."""

    grant_id: str
    account_id: str
    status: str
    lapsed: int
    balance: int
    granted: int
    available: int


class GrantLine(msgspec.Struct, frozen=True, kw_only=True):
    grant_id: str
    amount: int
    remaining: int
    priority: int
    expires_at: datetime | None
    reason: str
    status: str
    granted_at: datetime
    closed_at: datetime | None
    position: int


class Grants(msgspec.Struct, frozen=True, kw_only=True):
    """A page, newest first: pass ``next_after`` as ``after`` for the next one."""

    data: list[GrantLine]
    has_more: bool
    next_after: int | None


class LowBalanceThreshold(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    threshold: int | None
    effective_threshold: int


class WebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    url: str
    events: list[str]
    created: datetime
    position: int
    disabled: datetime | None = None


class CreatedEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A new endpoint with its signing secret: the only time the service shows it."""

    id: str
    url: str
    events: list[str]
    secret: str
    created: datetime


class WebhookEndpoints(msgspec.Struct, frozen=True, kw_only=True):
    data: list[WebhookEndpoint]
    has_more: bool
    next_after: int | None


class CheckoutStarted(msgspec.Struct, frozen=True, kw_only=True):
    """Send the customer to ``checkout_url``; the credits arrive when it is paid."""

    checkout_url: str
    session_id: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error answer; 422 adds ``errors``, one entry per bad field."""

    message: str


class ValidationErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    message: str
    errors: dict[str, list[str]]

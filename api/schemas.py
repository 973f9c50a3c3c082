"""Every request body and answer of the HTTP API, as msgspec Structs.

A request Struct is the one place a body's rules live: routes decode the raw
bytes straight into it (api/validation.py), its constraints document it in
OpenAPI, and a refused body is answered in the contract's 422 wording from the
same constraints. ``Meta(extra=...)`` carries what the wording needs beyond the
constraint itself: ``hint`` (appended when a pattern does not match),
``invalid`` (the message for a value of the wrong form) and ``missing`` (for an
absent field).

Integers are JSON integers: ``1000``, never ``1000.0`` or ``"1000"``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from ledger.domain.account import (
    ACCOUNT_ID_PATTERN,
    MAX_GRANT,
    PERIOD_PATTERN,
    REASON_PATTERN,
    CreditAccount,
)
from ledger.domain.limits import (
    DEFAULT_PRIORITY,
    MAX_CREDITS,
    MAX_MONTHLY_ALLOWANCE,
    MAX_PRIORITY,
    MAX_REASON_LENGTH,
    MIN_CREDITS,
)
from ledger.handlers.accounts import AccountBalances
from ledger.notifications import EVENT_TYPES
from ledger.notifications.url_form import MAX_URL_LENGTH, URL_PATTERN

MAX_AMOUNT = 1_000_000_000_000
DEFAULT_HOLD_SECONDS = 900
MAX_HOLD_SECONDS = 7 * 24 * 3600
MAX_THRESHOLD = 1_000_000_000_000

Reason = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_REASON_LENGTH,
        pattern=REASON_PATTERN,
        description="Any text but a NUL character.",
        examples=["image generation"],
        extra={"invalid": "The reason must not contain a NUL character."},
    ),
]


# --- requests ------------------------------------------------------------------------------


class PurchaseRequest(msgspec.Struct, frozen=True):
    """Buy top-up credits: they are added when the Checkout is paid."""

    credits: Annotated[int, msgspec.Meta(ge=MIN_CREDITS, le=MAX_CREDITS, examples=[1000])]


class OpenAccountRequest(msgspec.Struct, frozen=True):
    """Open an account; ``monthly_allowance`` defaults to ``DEFAULT_MONTHLY_ALLOWANCE``."""

    account_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=100,
            pattern=f"^{ACCOUNT_ID_PATTERN}$",
            description="Letters, digits and `_ . : -`, starting with a letter or digit.",
            examples=["acct_42"],
            extra={"hint": " Use letters, digits and _ . : - (for example acct_123)."},
        ),
    ]
    monthly_allowance: (
        Annotated[int, msgspec.Meta(ge=0, le=MAX_MONTHLY_ALLOWANCE, examples=[5000])] | None
    ) = None


class SpendRequest(msgspec.Struct, frozen=True):
    """Spend ``amount`` credits: the allowance first, then grants, then top-ups."""

    amount: Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT, examples=[25])]
    reason: Reason | None = None


class PlaceHoldRequest(msgspec.Struct, frozen=True):
    """Reserve ``amount`` credits until captured, released or expired."""

    amount: Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT, examples=[300])]
    expires_in_seconds: (
        Annotated[int, msgspec.Meta(ge=1, le=MAX_HOLD_SECONDS, examples=[DEFAULT_HOLD_SECONDS])]
        | None
    ) = None
    reason: Reason | None = None


class CaptureHoldRequest(msgspec.Struct, frozen=True):
    """Spend ``amount`` of the hold (at most what it holds); the rest goes back."""

    amount: Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT, examples=[250])]


class MonthlyResetRequest(msgspec.Struct, frozen=True):
    """Reset the allowance for ``period`` (default: the current UTC month)."""

    period: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=7,
                pattern=f"^{PERIOD_PATTERN}$",
                description="The billing period, `YYYY-MM`.",
                examples=["2026-12"],
                extra={"hint": " Use YYYY-MM."},
            ),
        ]
        | None
    ) = None


class ChangePlanRequest(msgspec.Struct, frozen=True):
    """The monthly allowance from the next reset on."""

    monthly_allowance: Annotated[int, msgspec.Meta(ge=0, le=MAX_MONTHLY_ALLOWANCE, examples=[8000])]


class ThresholdRequest(msgspec.Struct, frozen=True):
    """The account's own low-balance threshold, or null for 10 % of its monthly allowance."""

    threshold: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                le=MAX_THRESHOLD,
                examples=[500],
                extra={"missing": "The threshold field must be present."},
            ),
        ]
        | None
    )


class GrantRequest(msgspec.Struct, frozen=True):
    """Give credits that are not bought: they burn after the allowance and before top-ups."""

    amount: Annotated[int, msgspec.Meta(ge=1, le=MAX_GRANT, examples=[500])]
    expires_at: (
        Annotated[
            datetime,
            msgspec.Meta(
                tz=True,
                description="RFC 3339 with an offset; left out: never.",
                examples=["2027-01-31T23:59:59Z"],
                extra={"invalid": "The expires at must be an RFC 3339 time with an offset."},
            ),
        ]
        | None
    ) = None
    # null counts as left out, as for the other optional fields of a body.
    priority: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                le=MAX_PRIORITY,
                description="Lower burns first; left out or null: 50.",
                examples=[50],
            ),
        ]
        | None
    ) = DEFAULT_PRIORITY
    reason: Reason | None = None


class VoidGrantRequest(msgspec.Struct, frozen=True):
    """Withdraw a grant; what remains of it lapses now."""

    reason: Reason | None = None


EventType = Literal[
    "credits.purchased",
    "credits.spent",
    "credits.low_balance",
    "credits.depleted",
    "hold.expired",
    "credits.granted",
    "grant.expired",
]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]


class WebhookEndpointRequest(msgspec.Struct, frozen=True):
    """Subscribe ``url`` to notification types."""

    url: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_URL_LENGTH,
            pattern=f"^{URL_PATTERN}$(?!\\n)",  # $ alone admits a last newline
            examples=["https://billing.internal.example/ledger-hooks"],
            extra={"invalid": "The url field must be a valid URL (http or https)."},
        ),
    ]
    events: Annotated[
        list[EventType],
        msgspec.Meta(
            min_length=1,
            extra={"invalid": "The selected {field} is invalid. Choose from {choices}."},
        ),
    ]


class StripeObject(msgspec.Struct, frozen=True):
    """The Checkout session, charge or dispute an event is about (its other fields too)."""

    id: Annotated[str, msgspec.Meta(min_length=1, examples=["cs_test_a1B2c3"])]


class StripeEventData(msgspec.Struct, frozen=True):
    object: StripeObject


class StripeEvent(msgspec.Struct, frozen=True):
    """A Stripe event, exactly as Stripe sent it (its signature is checked on the raw bytes)."""

    id: Annotated[str, msgspec.Meta(min_length=1, examples=["evt_1QEXAMPLE"])]
    type: Annotated[str, msgspec.Meta(min_length=1, examples=["checkout.session.completed"])]
    data: StripeEventData


# --- answers -------------------------------------------------------------------------------


class AccountCredits(AccountBalances, frozen=True):
    """An account's balance: ``balance = allowance_remaining + granted + topup_balance``.

    ``held`` is what open holds reserve of it; ``available = balance - held`` is
    what can be spent or held now. ``granted`` is the sum of the grants' ``remaining``: the
    active grants', and what open holds still reserve of grants closed since (listed
    ``expired`` or ``voided``, their ``remaining`` those reserved credits until the hold
    settles).
    """


class AccountPlan(msgspec.Struct, frozen=True):
    """An account's plan: this period's allowance and the one from the next reset on."""

    account_id: str
    monthly_allowance: int
    next_monthly_allowance: int
    period: str

    @classmethod
    def of(cls, account: CreditAccount) -> AccountPlan:
        return cls(
            account_id=account.account_id,
            monthly_allowance=account.monthly_allowance,
            next_monthly_allowance=account.next_monthly_allowance,
            period=account.period,
        )


class LowBalanceThreshold(msgspec.Struct, frozen=True):
    """When ``credits.low_balance`` fires for an account.

    ``threshold`` is the account's own setting (null: the default);
    ``effective_threshold`` is what applies now (the default is 10 % of the
    monthly allowance, rounded down).
    """

    account_id: str
    threshold: int | None
    effective_threshold: int


class WebhookReceived(msgspec.Struct, frozen=True):
    """The webhook's answer to every verified event, handled or not."""

    received: bool


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error answer: what went wrong, in a sentence."""

    message: str


class ValidationErrorBody(msgspec.Struct, frozen=True):
    """422: the first message, and every bad field's messages."""

    message: str
    errors: dict[str, list[str]]

"""A typed async client of the credit ledger's HTTP API, and what webhook receivers need.

::

    from ledger_client import LedgerClient, InsufficientCredits

    async with LedgerClient("https://ledger.internal", token) as ledger:
        try:
            spent = await ledger.spend("acct_42", 25, reason="image generation")
        except InsufficientCredits:
            ...
"""

from __future__ import annotations

from ledger_client.client import OPERATIONS, LedgerClient, Operation, __version__
from ledger_client.errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InsufficientCredits,
    LedgerError,
    NotFound,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnexpectedAnswer,
    ValidationError,
)
from ledger_client.types import (
    AccountCredits,
    AccountPlan,
    CheckoutStarted,
    CreatedEndpoint,
    EventType,
    GrantAnswer,
    GrantClosedAnswer,
    GrantLine,
    Grants,
    GrantStatus,
    Hold,
    HoldStatus,
    LowBalanceThreshold,
    Spent,
    WebhookEndpoint,
    WebhookEndpoints,
)
from ledger_client.webhooks import (
    SIGNATURE_HEADER,
    AccountBalances,
    CreditsGrantedNotification,
    CreditsPurchasedNotification,
    CreditsSpentNotification,
    DepletedNotification,
    GrantExpiredNotification,
    HoldExpiredNotification,
    InvalidNotification,
    InvalidSignature,
    KnownNotification,
    LowBalanceNotification,
    Notification,
    UnknownNotification,
    construct_notification,
    parse_notification,
    verify_signature,
)

__all__ = [
    "OPERATIONS",
    "SIGNATURE_HEADER",
    "AccountBalances",
    "AccountCredits",
    "AccountPlan",
    "ApiError",
    "CheckoutStarted",
    "Conflict",
    "ConnectionFailed",
    "CreatedEndpoint",
    "CreditsGrantedNotification",
    "CreditsPurchasedNotification",
    "CreditsSpentNotification",
    "DepletedNotification",
    "EventType",
    "Forbidden",
    "GrantAnswer",
    "GrantClosedAnswer",
    "GrantExpiredNotification",
    "GrantLine",
    "GrantStatus",
    "Grants",
    "Hold",
    "HoldExpiredNotification",
    "HoldStatus",
    "InsufficientCredits",
    "InvalidNotification",
    "InvalidSignature",
    "KnownNotification",
    "LedgerClient",
    "LedgerError",
    "LowBalanceNotification",
    "LowBalanceThreshold",
    "NotFound",
    "Notification",
    "Operation",
    "ServerError",
    "ServiceUnavailable",
    "Spent",
    "Unauthorized",
    "UnexpectedAnswer",
    "UnknownNotification",
    "ValidationError",
    "WebhookEndpoint",
    "WebhookEndpoints",
    "__version__",
    "construct_notification",
    "parse_notification",
    "verify_signature",
]

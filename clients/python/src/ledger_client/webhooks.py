"""Receiving the ledger's notifications: check ``Ledger-Signature``, then parse the body.

::

    def receive(raw_body: bytes, headers: Mapping[str, str]) -> None:
        notification = construct_notification(raw_body, headers["Ledger-Signature"], SECRET)
        match notification:
            case LowBalanceNotification(data=data):
                warn(data.account_id, data.available)
            case CreditsSpentNotification(data=data):
                ...

Each notification is ``{"id", "type", "created", "data"}``; ``data`` carries the
account's balances after the event plus what the type adds. Dedupe by ``id``: a
delivery may come more than once, and out of order (docs/notifications.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from ledger_client.errors import LedgerError

SIGNATURE_HEADER = "Ledger-Signature"
DEFAULT_TOLERANCE = 300


class InvalidSignature(LedgerError):
    """The body was not signed with the secret, the header is malformed, or it is too old."""


def verify_signature(
    payload: bytes,
    header: str,
    secret: str,
    tolerance: int | None = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> int:
    """Check ``Ledger-Signature`` (``t=<unix>,v1=<hex>``) on the raw body; its time if good.

    ``payload`` is the body exactly as received: never re-serialised JSON. Any ``v1``
    that is the HMAC-SHA256 of ``"<t>.<payload>"`` keyed by the whole ``whsec_…``
    secret passes (several appear while a secret is rotated). A ``t`` more than
    ``tolerance`` seconds from now, in either direction, is refused (a replay, or a
    clock far off); ``tolerance=None`` skips that check.
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidSignature(f"the timestamp {value!r} is not a number") from None
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise InvalidSignature("no timestamp (t=) in the signature header")
    if not signatures:
        raise InvalidSignature("no v1 signature in the signature header")
    expected = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256
    ).hexdigest()
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        raise InvalidSignature("no signature matches the body with this secret")
    if tolerance is not None:
        age = (time.time() if now is None else now) - timestamp
        if abs(age) > tolerance:
            raise InvalidSignature(
                f"the signature's time is {abs(age):.0f} s {'old' if age > 0 else 'ahead'}"
                f" (tolerance {tolerance} s)"
            )
    return timestamp


# --- what is sent --------------------------------------------------------------------------


class AccountBalances(msgspec.Struct, frozen=True, kw_only=True):
    """The account after the event; every notification's ``data`` has these."""

    account_id: str
    balance: int
    available: int
    held: int
    allowance_remaining: int
    granted: int
    topup_balance: int
    monthly_allowance: int
    low_balance_threshold: int
    """The threshold in effect (the account's own, or 10 % of its allowance)."""


class CreditsPurchasedData(AccountBalances, frozen=True, kw_only=True):
    session_id: str
    credits: int


class CreditsSpentData(AccountBalances, frozen=True, kw_only=True):
    """A spend, or a capture of a hold (then ``hold_id`` is set and ``reason`` is None)."""

    amount: int
    from_allowance: int
    from_grants: dict[str, int]
    from_topup: int
    reason: str | None
    hold_id: str | None


class HoldExpiredData(AccountBalances, frozen=True, kw_only=True):
    hold_id: str
    released: int
    lapsed: int


class CreditsGrantedData(AccountBalances, frozen=True, kw_only=True):
    grant_id: str
    amount: int
    priority: int
    expires_at: datetime | None
    reason: str | None


class GrantExpiredData(AccountBalances, frozen=True, kw_only=True):
    grant_id: str
    lapsed: int
    """What ended now (what holds reserve of it lapses when they settle)."""


class Notification(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """What every notification has: its ``id`` (dedupe by it) and ``created`` (Unix seconds)."""

    id: str
    created: int

    @property
    def type(self) -> str:
        return str(self.__struct_config__.tag)

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created, UTC)


class CreditsPurchasedNotification(Notification, frozen=True, tag="credits.purchased"):
    data: CreditsPurchasedData


class CreditsSpentNotification(Notification, frozen=True, tag="credits.spent"):
    data: CreditsSpentData


class LowBalanceNotification(Notification, frozen=True, tag="credits.low_balance"):
    """``available`` fell below the threshold (once per crossing)."""

    data: AccountBalances


class DepletedNotification(Notification, frozen=True, tag="credits.depleted"):
    """``available`` reached 0 (once per crossing)."""

    data: AccountBalances


class HoldExpiredNotification(Notification, frozen=True, tag="hold.expired"):
    data: HoldExpiredData


class CreditsGrantedNotification(Notification, frozen=True, tag="credits.granted"):
    data: CreditsGrantedData


class GrantExpiredNotification(Notification, frozen=True, tag="grant.expired"):
    data: GrantExpiredData


KnownNotification = (
    CreditsPurchasedNotification
    | CreditsSpentNotification
    | LowBalanceNotification
    | DepletedNotification
    | HoldExpiredNotification
    | CreditsGrantedNotification
    | GrantExpiredNotification
)

NOTIFICATION_TYPES: dict[str, type[Notification]] = {
    str(kind.__struct_config__.tag): kind
    for kind in (
        CreditsPurchasedNotification,
        CreditsSpentNotification,
        LowBalanceNotification,
        DepletedNotification,
        HoldExpiredNotification,
        CreditsGrantedNotification,
        GrantExpiredNotification,
    )
}


class UnknownNotification(msgspec.Struct, frozen=True, kw_only=True):
    """A type this client does not know yet (a newer service): its data as sent."""

    id: str
    type: str
    created: int
    data: dict[str, Any]


class _Head(msgspec.Struct, frozen=True):
    type: str


class InvalidNotification(LedgerError):
    """A body that is not a notification of the shape its type promises."""


def parse_notification(payload: bytes | str) -> KnownNotification | UnknownNotification:
    """The notification in a body (verify its signature first: ``construct_notification``)."""
    try:
        kind = NOTIFICATION_TYPES.get(msgspec.json.decode(payload, type=_Head).type)
        if kind is None:
            return msgspec.json.decode(payload, type=UnknownNotification)
        known: KnownNotification = msgspec.json.decode(payload, type=kind)  # type: ignore[assignment]
        return known
    except msgspec.DecodeError as wrong:
        raise InvalidNotification(str(wrong)) from wrong


def construct_notification(
    payload: bytes, header: str, secret: str, tolerance: int | None = DEFAULT_TOLERANCE
) -> KnownNotification | UnknownNotification:
    """``verify_signature``, then ``parse_notification``: the one call a receiver needs."""
    verify_signature(payload, header, secret, tolerance)
    return parse_notification(payload)

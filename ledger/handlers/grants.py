"""Deciding grant commands: give credits, withdraw a grant, record a grant's expiry."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec

from ledger.commands import ExpireGrant, GrantCredits, VoidGrant
from ledger.domain.account import CreditAccount, in_utc_years
from ledger.domain.errors import GrantNotDue
from ledger.domain.events import GrantExpired
from ledger.domain.grants import ACTIVE, Grant
from ledger.handlers.account_stream import by_account, existing, load_account
from ledger.handlers.expiries import expire_due
from ledger.store.claims import (
    KEY_REUSED,
    Claim,
    IdempotencyKeyReused,
    StoredAnswer,
    request_fingerprint,
)
from ledger.times import in_utc
from ledger.unit_of_work import Decision, Handler, mark_replayed


class GrantAnswer(msgspec.Struct, frozen=True):
    """A grant as the API answers it, with the account's balances after the command."""

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


def grant_answer(account: CreditAccount, grant_id: str, grant: Grant) -> GrantAnswer:
    return GrantAnswer(
        grant_id=grant_id,
        account_id=account.account_id,
        amount=grant.amount,
        remaining=grant.remaining,
        priority=grant.priority,
        expires_at=None if grant.expires_at is None else in_utc(grant.expires_at),
        reason=grant.reason,
        status=grant.status,
        balance=account.balance,
        granted=account.granted,
        available=account.available,
    )


def grant_id_for(account_id: str, idempotency_key: str) -> str:
    """A grant's id follows from its request's key: every retry names the same grant."""
    digest = hashlib.sha256(f"grant\0{account_id}\0{idempotency_key}".encode()).hexdigest()
    return f"grant_{digest[:24]}"


def decide_grant(account: CreditAccount | None, command: GrantCredits) -> Decision[GrantAnswer]:
    account = existing(account, command.account_id)
    assert command.at is not None
    grant_id = grant_id_for(command.account_id, command.idempotency_key)
    keys = expire_due(account, command.at)  # the answer's balances count no expired grant
    grant = account.grant(
        grant_id,
        command.amount,
        priority=command.priority,
        expires_at=command.expires_at,
        reason=command.reason,
        at=command.at,
    )
    return Decision(grant_answer(account, grant_id, grant), [account], keys)


def grant_claim(command: GrantCredits) -> Claim:
    """A grant is asked for once per key: asked again, the same grant (its ``expires_at`` the
    same instant, with any offset, as its answer gives it in UTC) gets the first answer."""
    expires_at = command.expires_at
    if expires_at is not None and in_utc_years(expires_at):  # else refused (InvalidGrant)
        expires_at = expires_at.astimezone(UTC)
    return Claim(
        f"grant/{command.account_id}",
        command.idempotency_key,
        _grant_fingerprint(command, expires_at),
    )


def _grant_fingerprint(command: GrantCredits, expires_at: datetime | None) -> bytes:
    return request_fingerprint(
        {
            "amount": command.amount,
            "priority": command.priority,
            "expires_at": None if expires_at is None else expires_at.isoformat(),
            "reason": command.reason,
        }
    )


def grant_replayed(earlier: StoredAnswer, command: GrantCredits) -> GrantAnswer:
    """The first answer for the same grant asked again under its key. A claim recorded
    before expiries were compared in UTC kept the offset as written: the same request."""
    if earlier.request_hash != grant_claim(command).fingerprint:
        if earlier.request_hash != _grant_fingerprint(command, command.expires_at):
            raise IdempotencyKeyReused(KEY_REUSED)
        mark_replayed()  # the unit of work marks a match of the claim's own fingerprint only
    return msgspec.json.decode(earlier.response, type=GrantAnswer)


class GrantClosedAnswer(msgspec.Struct, frozen=True):
    """What a grant's closing let lapse, and the account's balances after it."""

    grant_id: str
    account_id: str
    status: str
    lapsed: int
    balance: int
    granted: int
    available: int


def decide_void(account: CreditAccount | None, command: VoidGrant) -> Decision[GrantClosedAnswer]:
    account = existing(account, command.account_id)
    assert command.at is not None
    keys = expire_due(account, command.at)  # a grant past its expiry is closed: 409
    lapsed = account.void_grant(command.grant_id, command.reason, command.at)
    return Decision(_closed(account, command.grant_id, "voided", lapsed), [account], keys)


def void_claim(command: VoidGrant) -> Claim | None:
    """A void with an idempotency key is answered once: a repeat gets the first answer."""
    if command.idempotency_key is None:
        return None
    return Claim(
        f"void/{command.account_id}",
        command.idempotency_key,
        request_fingerprint({"grant_id": command.grant_id, "reason": command.reason}),
    )


def decide_expire(
    account: CreditAccount | None, command: ExpireGrant
) -> Decision[GrantClosedAnswer]:
    account = existing(account, command.account_id)
    assert command.at is not None
    grant = account.grants.get(command.grant_id)
    if grant is None or grant.status != ACTIVE or not grant.has_expired(command.at):
        raise GrantNotDue(command.grant_id)
    # With the other expiries due (in the order they fell due): the answer, and the
    # notifications of this expiry, count no hold or grant a balance read would not.
    keys = expire_due(account, command.at)
    [lapsed] = [
        event.lapsed
        for event in account.pending_events
        if isinstance(event, GrantExpired) and event.grant_id == command.grant_id
    ]
    return Decision(_closed(account, command.grant_id, "expired", lapsed), [account], keys)


def _closed(account: CreditAccount, grant_id: str, status: str, lapsed: int) -> GrantClosedAnswer:
    return GrantClosedAnswer(
        grant_id=grant_id,
        account_id=account.account_id,
        status=status,
        lapsed=lapsed,
        balance=account.balance,
        granted=account.granted,
        available=account.available,
    )


HANDLERS: dict[type, Handler] = {  # type: ignore[type-arg]
    GrantCredits: Handler(
        GrantAnswer, by_account, load_account, decide_grant, grant_claim, grant_replayed
    ),
    VoidGrant: Handler(GrantClosedAnswer, by_account, load_account, decide_void, void_claim),
    ExpireGrant: Handler(GrantClosedAnswer, by_account, load_account, decide_expire),
}

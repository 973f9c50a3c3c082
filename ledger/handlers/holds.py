"""Deciding hold commands: reserve credits before work, capture, release or expire after."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from ledger.commands import PlaceHold, SettleHold
from ledger.domain.account import CreditAccount
from ledger.domain.errors import HoldAlreadySettled, HoldHasExpired, HoldNotDue
from ledger.domain.holds import OpenHold, Settlement
from ledger.handlers.account_stream import by_account, existing, load_account
from ledger.store.claims import Claim, StoredAnswer, request_fingerprint
from ledger.store.commit import ClaimRecord
from ledger.unit_of_work import Decision, Handler

HoldStatus = Literal["held", "captured", "released", "expired"]


class Hold(msgspec.Struct, frozen=True):
    """A hold as the API answers it, with the account's balances after the command."""

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


def hold_answer(
    account: CreditAccount,
    hold_id: str,
    hold: OpenHold,
    status: HoldStatus,
    settlement: Settlement | None = None,
) -> Hold:
    """The hold and the account's balances as they are now."""
    return Hold(
        hold_id=hold_id,
        account_id=account.account_id,
        status=status,
        amount=hold.amount,
        captured=settlement.captured if settlement else 0,
        released=settlement.released if settlement else 0,
        reason=hold.reason,
        expires_at=hold.expires_at,
        balance=account.balance,
        held=account.held,
        available=account.available,
    )


def hold_id_for(account_id: str, idempotency_key: str) -> str:
    """A hold's id follows from its request's key: every retry names the same hold."""
    digest = hashlib.sha256(f"{account_id}\0{idempotency_key}".encode()).hexdigest()
    return f"hold_{digest[:24]}"


def decide_place(account: CreditAccount | None, command: PlaceHold) -> Decision[Hold]:
    account = existing(account, command.account_id)
    assert command.at is not None
    hold_id = hold_id_for(command.account_id, command.idempotency_key)
    expires_at = command.at + timedelta(seconds=command.expires_in_seconds)
    keys = expire_due_holds(account, command.at)
    account.expire_due_grants(command.at)  # as ledger/handlers/expiries.py's expire_due
    hold = account.place_hold(hold_id, command.amount, command.reason, expires_at, command.at)
    return Decision(hold_answer(account, hold_id, hold, "held"), [account], keys)


def place_claim(command: PlaceHold) -> Claim:
    return Claim(
        f"hold/{command.account_id}",
        command.idempotency_key,
        request_fingerprint(
            {
                "amount": command.amount,
                "expires_in_seconds": command.expires_in_seconds,
                "reason": command.reason,
            }
        ),
    )


def decide_settle(account: CreditAccount | None, command: SettleHold) -> Decision[Hold]:
    """Capture, release or expire an open hold (a settled one is answered from its claim)."""
    account = existing(account, command.account_id)
    assert command.at is not None
    hold = account.hold(command.hold_id)  # HoldNotFound once settled: the claim answers then
    settlement: Settlement | None
    outcome: HoldStatus = command.outcome
    if command.outcome == "captured":
        settlement = account.capture_hold(command.hold_id, command.amount, command.at)
    elif command.outcome == "released":
        # Past its expiry, the hold is no longer open, swept or not: its release answers
        # its expiry, as once the sweeper has come.
        settlement = account.expire_hold(command.hold_id, command.at)
        if settlement is None:
            settlement = account.release_hold(command.hold_id)
        else:
            outcome = "expired"
    else:
        settlement = account.expire_hold(command.hold_id, command.at)
        if settlement is None:
            raise HoldNotDue(command.hold_id)
    if command.outcome != "expired":  # the sweeper's own comes next, and counts its own
        # Then the grants' expiries due (as the sweeper, holds first): the client's answer
        # counts no grant a spend would refuse.
        account.expire_due_grants(command.at)
    answer = hold_answer(account, command.hold_id, hold, outcome, settlement)
    return Decision(answer, [account])


def expire_due_holds(account: CreditAccount, at: datetime | None) -> list[ClaimRecord]:
    """Record the expiry of each open hold past it at ``at``, as the sweeper would: with
    its settlement's claim, which answers a later capture, release or read of the hold.

    A hold past its expiry is no longer open, whether the sweeper has come or not (it finds
    due holds in the views, which a stopped projector holds back): a command that takes
    credits or starts a period records the expiry first, so the credits are there for it."""
    if at is None or not account.holds:
        return []
    keys = []
    for hold_id, hold in list(account.holds.items()):
        settlement = account.expire_hold(hold_id, at)
        if settlement is None:
            continue
        expired = SettleHold(
            account_id=account.account_id, hold_id=hold_id, outcome="expired", at=at
        )
        answer = hold_answer(account, hold_id, hold, "expired", settlement)
        keys.append(ClaimRecord(settle_claim(expired), msgspec.json.encode(answer)))
    return keys


def settle_claim(command: SettleHold) -> Claim:
    """A hold is settled once: its settlement is claimed under its id."""
    request: dict[str, object] = {"status": command.outcome, "amount": command.amount}
    if command.idempotency_key is not None:
        request["key"] = command.idempotency_key
    return Claim(
        f"hold-settlement/{command.account_id}", command.hold_id, request_fingerprint(request)
    )


def settled_before(earlier: StoredAnswer, command: SettleHold) -> Hold:
    """The first answer for a repeated settlement, or why this one comes too late."""
    first = msgspec.json.decode(earlier.response, type=Hold)
    if earlier.request_hash == settle_claim(command).fingerprint:
        return first
    if first.status == "expired" and command.outcome == "released":
        return first  # its credits already went back: what a release asks
    if first.status == "expired" and command.outcome == "captured":
        raise HoldHasExpired(f"The hold {command.hold_id} expired at {first.expires_at}.")
    raise HoldAlreadySettled(f"The hold {command.hold_id} was already {first.status}.")


HANDLERS: dict[type, Handler] = {  # type: ignore[type-arg]
    PlaceHold: Handler(Hold, by_account, load_account, decide_place, place_claim),
    SettleHold: Handler(
        Hold, by_account, load_account, decide_settle, settle_claim, settled_before
    ),
}

"""Deciding hold commands: reserve credits before work, capture, release or expire after."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import msgspec

from ledger.commands import PlaceHold, SettleHold
from ledger.domain.account import CreditAccount
from ledger.domain.errors import HoldAlreadySettled, HoldHasExpired, HoldNotDue
from ledger.domain.holds import Settlement
from ledger.handlers.account_stream import by_account, existing, load_account
from ledger.handlers.expiries import expire_due
from ledger.handlers.hold_answers import (
    Hold,
    HoldStatus,
    expiry_claim,
    hold_answer,
    settle_claim,
)
from ledger.store.claims import Claim, StoredAnswer, request_fingerprint
from ledger.unit_of_work import Decision, Handler


def hold_id_for(account_id: str, idempotency_key: str) -> str:
    """A hold's id follows from its request's key: every retry names the same hold."""
    digest = hashlib.sha256(f"{account_id}\0{idempotency_key}".encode()).hexdigest()
    return f"hold_{digest[:24]}"


def decide_place(account: CreditAccount | None, command: PlaceHold) -> Decision[Hold]:
    account = existing(account, command.account_id)
    assert command.at is not None
    hold_id = hold_id_for(command.account_id, command.idempotency_key)
    expires_at = command.at + timedelta(seconds=command.expires_in_seconds)
    keys = expire_due(account, command.at)
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
    answered_as = None
    if command.outcome == "captured":
        settlement = account.capture_hold(command.hold_id, command.amount, command.at)
    elif command.outcome == "released":
        # Past its expiry, the hold is no longer open, swept or not: its release records
        # and answers its expiry, as the sweeper would have, so that it and its repeats
        # are answered as those of a release once the sweeper has come (not replays).
        settlement = account.expire_hold(command.hold_id, command.at)
        if settlement is None:
            settlement = account.release_hold(command.hold_id)
        else:
            outcome = "expired"
            answered_as = expiry_claim(command.account_id, command.hold_id).fingerprint
    else:
        settlement = account.expire_hold(command.hold_id, command.at)
        if settlement is None:
            raise HoldNotDue(command.hold_id)
    # Then the other expiries due (holds first, as the sweeper): the answer, and the
    # notifications of the sweeper's expiry, count no hold a spend would take nor grant it
    # would refuse, as a balance read then.
    keys = expire_due(account, command.at)
    answer = hold_answer(account, command.hold_id, hold, outcome, settlement)
    return Decision(answer, [account], keys, answered_as)


def settled_before(earlier: StoredAnswer, command: SettleHold) -> Hold:
    """The first answer for a repeated settlement, or why this one comes too late."""
    first = msgspec.json.decode(earlier.response, type=Hold)
    if earlier.request_hash == settle_claim(command).fingerprint:
        return first
    if first.status == "expired" and command.outcome == "released":
        return first  # its credits already went back: what a release asks (not a replay)
    if first.status == "expired" and command.outcome == "captured":
        raise HoldHasExpired(f"The hold {command.hold_id} expired at {first.expires_at}.")
    raise HoldAlreadySettled(f"The hold {command.hold_id} was already {first.status}.")


HANDLERS: dict[type, Handler] = {  # type: ignore[type-arg]
    PlaceHold: Handler(Hold, by_account, load_account, decide_place, place_claim),
    SettleHold: Handler(
        Hold, by_account, load_account, decide_settle, settle_claim, settled_before
    ),
}

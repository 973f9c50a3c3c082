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
from ledger.handlers.expiries import expire_due, expired_holds, expiry_records
from ledger.handlers.hold_answers import (
    Hold,
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
    past_due = hold.has_expired(command.at)
    if past_due and command.outcome != "captured":
        # Past its expiry, the hold is no longer open, swept or not: its release records
        # and answers its expiry, as the sweeper would have, so that it and its repeats
        # are answered as those of a release once the sweeper has come (not replays). With
        # the other expiries due, in the order they fell due (``expired_holds``).
        expired = expired_holds(account, command.at)
        answer = expired.pop(command.hold_id)
        answered_as = None
        if command.outcome == "released":
            answered_as = expiry_claim(command.account_id, command.hold_id).fingerprint
        keys = expiry_records(command.account_id, expired)
        return Decision(answer, [account], keys, answered_as)
    if command.outcome == "expired":
        raise HoldNotDue(command.hold_id)
    # The expiries due first (this hold's is not; a capture past it is refused below): they
    # fell due before this settlement, so a grant that expired while the hold was open has
    # closed, and what the settlement does not use of the hold's share of it lapses (its
    # answer says so, as when the sweeper came first); the answer counts no hold a spend
    # would take nor grant it would refuse, as a balance read then.
    keys = [] if past_due else expire_due(account, command.at)
    settlement: Settlement
    if command.outcome == "captured":
        settlement = account.capture_hold(command.hold_id, command.amount, command.at)
    else:
        settlement = account.release_hold(command.hold_id)
    answer = hold_answer(account, command.hold_id, hold, command.outcome, settlement)
    return Decision(answer, [account], keys)


def settled_before(earlier: StoredAnswer, command: SettleHold) -> Hold:
    """The first answer for a repeated settlement, or why this one comes too late."""
    first = msgspec.json.decode(earlier.response, type=Hold)
    if earlier.request_hash == settle_claim(command).fingerprint:
        return first
    if command.outcome == "released" and first.status in ("expired", "released"):
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

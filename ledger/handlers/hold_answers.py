"""A hold as commands and reads answer it, and the claim that settles it once."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from ledger.commands import SettleHold
from ledger.domain.account import CreditAccount
from ledger.domain.holds import OpenHold, Settlement
from ledger.store.claims import Claim, request_fingerprint
from ledger.times import in_utc

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
    lapsed: int | None = None
    """Of ``released``, what ended instead of coming back: an allowance share carried over
    a reset, and shares of grants closed while the hold was open (any part of the allowance
    share that repaid a clawback's debt is in the statement). None in an answer recorded
    before the field (its repeats, and the read of a hold it settled)."""


def hold_answer(
    account: CreditAccount,
    hold_id: str,
    hold: OpenHold,
    status: HoldStatus,
    settlement: Settlement | None = None,
) -> Hold:
    """The hold and the account's balances as they are now."""
    balance, held, available = account.balances()
    return Hold(
        hold_id=hold_id,
        account_id=account.account_id,
        status=status,
        amount=hold.amount,
        captured=settlement.captured if settlement else 0,
        released=settlement.released if settlement else 0,
        reason=hold.reason,
        expires_at=in_utc(datetime.fromisoformat(hold.expires_at)),
        balance=balance,
        held=held,
        available=available,
        lapsed=settlement.lapsed + sum(settlement.grants_lapsed.values()) if settlement else 0,
    )


def settle_claim(command: SettleHold) -> Claim:
    """A hold is settled once: its settlement is claimed under its id."""
    request: dict[str, object] = {"status": command.outcome, "amount": command.amount}
    if command.idempotency_key is not None:
        request["key"] = command.idempotency_key
    return Claim(
        f"hold-settlement/{command.account_id}", command.hold_id, request_fingerprint(request)
    )


def expiry_claim(account_id: str, hold_id: str) -> Claim:
    """The claim of a hold's expiry, as the sweeper (or a command that finds it due) records it."""
    return settle_claim(SettleHold(account_id=account_id, hold_id=hold_id, outcome="expired"))

"""Expiries due at a command's time, recorded before it is decided: holds' and grants'."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ledger.commands import SettleHold
from ledger.domain.account import CreditAccount
from ledger.handlers.hold_answers import hold_answer, settle_claim
from ledger.store.commit import ClaimRecord


def expire_due(account: CreditAccount, at: datetime | None) -> list[ClaimRecord]:
    """Record the expiry of each open hold and active grant past it at ``at``, as the
    sweeper would; the claims of the holds' settlements (see ``expire_due_holds``).

    Past its expiry a hold is no longer open and a grant no longer usable, swept or not:
    a command that answers the account's balances records those expiries first, so that
    its answer counts no credits the next spend would refuse (or take), and a read does
    the same on its own copy, never committed. Holds first, as the sweeper: a hold's share
    of a grant goes back to the grant and lapses with it (the balances are the same in
    either order)."""
    keys = expire_due_holds(account, at)
    if account.grants and at is not None:
        account.expire_due_grants(at)
    return keys


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

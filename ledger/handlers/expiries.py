"""Expiries due at a command's time, recorded before it is decided: holds' and grants'."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ledger.domain.account import CreditAccount
from ledger.handlers.hold_answers import Hold, expiry_claim, hold_answer
from ledger.store.commit import ClaimRecord


def expire_due(account: CreditAccount, at: datetime | None) -> list[ClaimRecord]:
    """Record the expiry of each open hold and active grant past it at ``at``, as the
    sweeper would; the claims of the holds' settlements, which answer a later capture,
    release or read of each hold (see ``expired_holds``)."""
    if not (account.holds or account.grants):  # nothing that expires: most spends
        return []
    return expiry_records(account.account_id, expired_holds(account, at))


def expiry_records(account_id: str, answers: dict[str, Hold]) -> list[ClaimRecord]:
    """The claims of the expiries of holds, answered so (``expired_holds``)."""
    return [
        ClaimRecord(expiry_claim(account_id, hold_id), msgspec.json.encode(answer))
        for hold_id, answer in answers.items()
    ]


def expired_holds(account: CreditAccount, at: datetime | None) -> dict[str, Hold]:
    """Record the expiry of each open hold and active grant past it at ``at``; the answers
    of the holds it expired, by id.

    Past its expiry a hold is no longer open and a grant no longer usable, swept or not:
    a command that answers the account's balances records those expiries first, so that
    its answer counts no credits the next spend would refuse (or take), and a read does
    the same on its own copy, never committed. They are recorded in the order they fell
    due (a hold before a grant at the same instant), as a sweeper that came in time would
    have: a hold's share of a grant that expired before it lapses with the hold, which its
    answer and ``hold.expired`` say; a share of one that expired after it goes back to the
    grant and lapses with it (the balances are the same in either order, not what each
    event says lapsed). The answers are made once every expiry is recorded: they tell the
    balances as a balance read would then, not as they stood between two expiries."""
    if at is None:
        return {}
    settled = []
    for hold_id in sorted(account.holds_due(at), key=lambda due: account.holds[due].due_at):
        hold = account.holds[hold_id]
        if account.grants:
            account.expire_due_grants(at, due_before=hold.due_at)
        settlement = account.expire_hold(hold_id, at)
        if settlement is not None:
            settled.append((hold_id, hold, settlement))
    if account.grants:
        account.expire_due_grants(at)
    return {
        hold_id: hold_answer(account, hold_id, hold, "expired", settlement)
        for hold_id, hold, settlement in settled
    }

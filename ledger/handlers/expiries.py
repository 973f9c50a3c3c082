"""Expiries due at a command's time, recorded before it is decided: holds' and grants'."""

from __future__ import annotations

from datetime import datetime

from ledger.domain.account import CreditAccount
from ledger.handlers.holds import expire_due_holds
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

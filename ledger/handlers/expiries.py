"""Expiries due at a command's time, recorded before it is decided: holds' and grants'."""

from __future__ import annotations

from datetime import datetime

from ledger.domain.account import CreditAccount
from ledger.handlers.holds import expire_due_holds
from ledger.store.commit import ClaimRecord


def expire_due(account: CreditAccount, at: datetime) -> list[ClaimRecord]:
    """Record the expiry of each open hold and active grant past it at ``at``, as the
    sweeper would; the claims of the holds' settlements (see ``expire_due_holds``).

    Past its expiry a hold is no longer open and a grant no longer usable, swept or not:
    an account read or decided on at ``at`` shows them so (a read does it on its own copy,
    never committed). Holds first: a hold's share of a grant then goes back to the grant
    and lapses with it, as the sweeper's two expiries would leave it in either order."""
    keys = expire_due_holds(account, at)
    if account.grants:
        account.expire_due_grants(at)
    return keys

"""Where every command is decided: one module per kind of command, plain functions.

Each handler names the lock it takes, the claim it makes (idempotency key,
Stripe event id, hold settlement), what it loads and how it decides; the unit
of work (ledger/unit_of_work.py) runs them all the same way.
"""

from __future__ import annotations

from ledger.handlers import accounts, grants, holds, payments, purchases
from ledger.unit_of_work import Handler

HANDLERS: dict[type, Handler] = {  # type: ignore[type-arg]
    **accounts.HANDLERS,
    **holds.HANDLERS,
    **grants.HANDLERS,
    **purchases.HANDLERS,
    **payments.HANDLERS,
}
"""Every command type, and its handler."""

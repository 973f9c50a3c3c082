"""How far from the database's clock an event's own time may be (a module of its own: the
`ledger` command reads it for `audit verify --max-time-skew`'s default without importing
the replay)."""

from __future__ import annotations

MAX_TIME_SKEW_SECONDS = 60.0
"""How far an event's own time (its ``timestamp``, which its command was judged at) may be
from its ``recorded_at`` (the database's clock under the ordering lock) before the audit
reports it (``time-far-from-record``): ``audit verify --max-time-skew``'s default. An honest
writer's event is stamped when its command starts and recorded as it commits, so the two
differ by the writer's clock offset, which the clock guard keeps within 5 s
(``LEDGER_MAX_CLOCK_SKEW_SECONDS``, ledger/clock_guard.py), and behind that, by what the
command waited for in between: its turn on the account (``TURN_WAIT_SECONDS``, 5 s), a pool
connection (5 s), locks in PostgreSQL (``lock_timeout``, 5 s, for a claim's row and the
ordering lock), the backoff between its 12 attempts (at most 8.2 s) and the group committer's
queue; about 30 s with every wait at its limit, doubled for a stalled disk or event loop.
A Checkout session's Stripe call comes before its command is stamped, and a command decided
again at the later time its stream told is stamped with that time (written within 5 s of
the database's clock, and recorded before this event)."""

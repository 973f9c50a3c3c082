"""The cyclic garbage collector, set for a long-running process.

CPython walks its youngest generation every 700 net allocations of container
objects, and from time to time every object it tracks, though a server's
objects are nearly all either long-lived (modules, the app, caches) or freed at
once by reference counting when a request ends. Measured in-process (the app
called as ASGI, PostgreSQL 15, 4,000 requests, 64 in flight), collections were
about a quarter of the CPU of a spend (208-219 -> 151-161 us) and of a balance
read (154 -> 115 us). So, once start-up is done: collect, freeze what exists
(``gc.freeze``: never walked again) and let the young generation grow to
``YOUNG`` before a pass. Cycles are still collected. ``make soak`` (60 s of mixed
traffic, one run each way) served 540 requests/s against 453 without this, and
the API process ended at 87.9 MiB against 84.6 (both growing with the caches as
accounts and sessions are added).

The replays settle too, in each of their processes, with ``BATCHES_YOUNG``: what a
batch of events makes is freed before the next (a rebuild's 20,000 events make some
100,000 objects; a whole 500,000-event part left 24 in cycles), so a pass comes only
once that much more is alive than after the last one: cycles piling up, or what a
replay keeps (``ledger audit verify`` keeps every aggregate it replays: ~20,000 for
1,000,000 events), not a batch being built. Measured on 1,000,000 events at two
processes, in turns with ``YOUNG``, both orders (bench/HISTORY.md, fourteenth session):
``ledger projections rebuild`` faster in 12 of 15 rounds (median 6 %, the workers'
Python CPU lower in 14); ``ledger audit verify`` faster in 13 of 15 (median 4 %).
(Before, ``YOUNG`` against CPython's 700 took a rebuild from 94,000-102,000 events/s to
105,000-112,000.)
"""

from __future__ import annotations

import gc

YOUNG = 10_000
"""Net container allocations between passes over the young generation (CPython: 700)."""
BATCHES_YOUNG = 1_000_000
"""``YOUNG`` for a replay's processes, which work through batches, each freed before the
next: above any batch's live objects (a rebuild's 20,000 events make some 100,000)."""
OLDER = (50, 100)
"""Passes of each younger generation between passes over the next (CPython: 10, 10)."""


def settle_after_start_up(young: int = YOUNG) -> None:
    """Freeze what start-up made and make collections rarer (see the module)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *OLDER)

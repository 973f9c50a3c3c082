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

The replays settle the same way, in each of their processes: ``ledger audit verify``
(its processes hold every aggregate they replay) and ``ledger projections rebuild``
(1,000,000 events at two processes: 94,000-102,000 events/s -> 105,000-112,000).
A rebuild's batches are freed whole before the next (some 100,000 objects each; a
whole part of 500,000 events left 24 objects in cycles), so its processes take
``BATCHES_YOUNG``: a pass only once that much more is alive than after the last one,
which for a rebuild means cycles piling up, not a batch being built (1,000,000 events
at two processes, 15 rounds against ``YOUNG`` in both orders: faster in 12, median 6 %,
less Python CPU in 14; bench/README.md, fourteenth session).
"""

from __future__ import annotations

import gc

YOUNG = 10_000
"""Net container allocations between passes over the young generation (CPython: 700)."""
BATCHES_YOUNG = 1_000_000
"""``YOUNG`` for a process that works through batches, each freed before the next:
above any batch's live objects (a rebuild's 20,000 events make some 100,000)."""
OLDER = (50, 100)
"""Passes of each younger generation between passes over the next (CPython: 10, 10)."""


def settle_after_start_up(young: int = YOUNG) -> None:
    """Freeze what start-up made and make collections rarer (see the module)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *OLDER)

"""Counters the write path bumps and ``/metrics`` reads, one set per process.

The write path runs thousands of times a second, so a count is one dict
increment: no lock (one event loop per process; a dict increment does not
yield), nothing allocated but the key the first time it is seen. Only
``api/metrics.py`` formats them; ``ledger/`` never imports ``api/``.
"""

from __future__ import annotations

from collections import Counter

events_appended: Counter[str] = Counter()
"""Events appended, by topic (``/metrics`` shows the type name, e.g. ``CreditsSpent``).

Counted when the append returns. An append made inside a caller's transaction
(a purchase's ``CheckoutRequested``) is counted then too, even in the rare case
that the caller's transaction fails afterwards.
"""

conflicts: Counter[str] = Counter()
"""Optimistic-concurrency conflicts met by ``retry_on_conflict``: ``retried`` (decided
again on fresh state) or ``gave_up`` (still conflicting after the last attempt: 503)."""

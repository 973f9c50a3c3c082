"""Times as the API and its notifications answer them, and lengths of time as the commands
and the audit write them for people (outside `ledger.domain`: the projections know the
domain's events alone, tests/unit/test_projection_folds.py; and here, not in `api/`, as
the audit imports nothing of the API)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

import msgspec


def in_utc(moment: datetime) -> str:
    """``moment`` in UTC with a "Z", as msgspec writes every time the API answers (a hold's
    or grant's expiry too; the offset a grant was given stays in its event)."""
    return msgspec.json.encode(moment.astimezone(UTC)).decode()[1:-1]


_UNITS = ((86_400, "d", "days"), (3_600, "h", "hours"), (60, "min", "minutes"), (1, "s", "s"))
"""The units a length of time is said in, largest first: their seconds, short and long names."""


def duration(seconds: float) -> str:
    """A length of time as a person reads it: ``0.4 s``, ``42 s``, ``3 min 25 s``,
    ``3 h 25 min``, ``2 d 3 h``; two units at most, tenths only below 10 s (``< 0.1 s``:
    some, ``0 s``: none). For a column (the views' lag in ``ledger projections status``)."""
    tenths = round(max(seconds, 0.0), 1)
    if tenths < 10:
        if tenths == 0:
            return "< 0.1 s" if seconds > 0 else "0 s"
        return f"{tenths:.1f} s"
    whole = round(seconds)
    for (size, unit, _), (smaller_size, smaller, _) in pairwise(_UNITS):
        if whole >= size:
            rest = whole % size // smaller_size
            return f"{whole // size:,} {unit}" + (f" {rest} {smaller}" if rest else "")
    return f"{whole} s"


def duration_in_one_unit(seconds: float) -> str:
    """A length of time in the largest unit of which it holds two, to a tenth, the unit
    spelled out: ``90.0 s``, ``2.5 minutes``, ``24.0 hours``, ``26,663.2 days``. For a
    sentence (the audit's ``time-far-from-record``: "... days ahead of when the database
    recorded it")."""
    for size, _, name in _UNITS[:-1]:
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {name}"
    return f"{seconds:,.1f} s"

"""Test clocks set apart from the database's."""

from __future__ import annotations

import math

UNJUDGED = math.inf
"""``verify``'s ``max_time_skew`` for a history written with a clock set apart from the
database's (a test's or the simulation's): no event's own time is held to its recorded time
(``time-far-from-record``), which such a clock puts hours or centuries apart by design."""

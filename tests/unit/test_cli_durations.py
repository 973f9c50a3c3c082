"""How long, as the ``ledger`` commands print it (the views' lag in `projections status`)
and as the audit's findings say it (an event's time far from its record)."""

from __future__ import annotations

import pytest

from ledger.times import duration, duration_in_one_unit


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.0, "0 s"),
        (0.01, "< 0.1 s"),
        (0.4, "0.4 s"),
        (9.94, "9.9 s"),
        (9.96, "10 s"),
        (42.4, "42 s"),
        (59.5, "1 min"),
        (205.0, "3 min 25 s"),
        (3_599.6, "1 h"),
        (12_345.678, "3 h 25 min"),
        (86_400.0, "1 d"),
        (90_000.0, "1 d 1 h"),
        (10_000_000.0, "115 d 17 h"),
    ],
)
def test_a_lag_reads_in_the_units_a_person_would_say(seconds: float, said: str) -> None:
    """`projections status` printed a view 3 h 25 min behind as "12345.7 s"."""
    assert duration(seconds) == said


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.04, "0.0 s"),
        (61.0, "61.0 s"),
        (119.96, "120.0 s"),
        (120.0, "2.0 minutes"),
        (7_199.0, "120.0 minutes"),
        (86_400.4, "24.0 hours"),
        (172_800.0, "2.0 days"),
        (2_303_692_800.0, "26,663.1 days"),
    ],
)
def test_a_time_far_from_its_record_reads_in_one_unit_spelled_out(
    seconds: float, said: str
) -> None:
    """The audit's ``time-far-from-record`` says "26,663.1 days ahead of when the database
    recorded it", "24.0 hours behind" (tests/integration/test_audit.py): the largest unit
    it holds two of, to a tenth, where a command's column says ``1 d``."""
    assert duration_in_one_unit(seconds) == said

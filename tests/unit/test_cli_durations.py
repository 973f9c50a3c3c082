"""How long, as the ``ledger`` commands print it (the views' lag in `projections status`)."""

from __future__ import annotations

import pytest

from api.cli_support import duration


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

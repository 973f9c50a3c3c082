"""The clock guard's judgement of a measured offset, and how the CLI says a refusal."""

from __future__ import annotations

import logging

import pytest

from api.cli_exits import error_in_one_line
from ledger.clock_guard import ClockGuard, ClockSkewed


def test_an_offset_beyond_the_tolerance_either_way_refuses_and_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = ClockGuard(tolerance=5)
    with caplog.at_level(logging.INFO, logger="ledger.clock_guard"):
        guard.note(4.9)
        within = guard.skewed
        guard.note(-7.0)
        behind = guard.skewed
        guard.note(3600.0)
        ahead = guard.skewed
        guard.note(0.2)

    assert (within, behind, ahead, guard.skewed) == (False, True, True, False)
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]
    assert "7.0 s behind the database's" in caplog.records[0].getMessage()


def test_only_an_offset_beyond_the_tolerance_by_more_than_the_round_trips_half_refuses() -> None:
    guard = ClockGuard(tolerance=5)
    guard.note(5.5, uncertainty=1.0)  # may have been 4.5 s
    unsure = guard.skewed
    guard.note(6.5, uncertainty=1.0)

    assert (unsure, guard.skewed) == (False, True)


def test_the_cli_says_a_refusal_in_one_line_that_says_nothing_was_recorded() -> None:
    said = error_in_one_line(ClockSkewed(86400.0, 5)).format_message()

    assert said.startswith("this host's clock is 24.0 hours ahead of the database's")
    assert "nothing was recorded" in said

"""``ledger reset-month --period`` far ahead of the current month: asked on a terminal, warned
of elsewhere. An account reset for a period refuses every earlier one for good, so a typo
(2062-01 for 2026-01) ended its monthly resets for decades without a word."""

from __future__ import annotations

import os
import pty
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from api import cli_accounts
from api.cli import main
from api.cli_accounts import asks_on_a_terminal, months_after

NOTHING_LISTENS = "postgresql://nobody@127.0.0.1:1/nothing"


def test_months_after_counts_calendar_months_in_utc() -> None:
    december = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)

    assert months_after("2026-12", december) == 0
    assert months_after("2027-01", december) == 1
    assert months_after("2027-02", december) == 2
    assert months_after("2026-01", december) == -11
    assert months_after("2062-01", december) == 421
    # 00:30 on January 1st in Paris is still December in UTC, the periods' time.
    paris = datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert months_after("2027-01", paris) == 1


def test_only_a_terminal_on_stdin_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    leader, follower = pty.openpty()
    reading, writing = os.pipe()
    try:
        with open(follower, closefd=False) as terminal:
            monkeypatch.setattr(sys, "stdin", terminal)
            assert asks_on_a_terminal()
        with open(reading, closefd=False) as pipe:  # cron's, a pipe's
            monkeypatch.setattr(sys, "stdin", pipe)
            assert not asks_on_a_terminal()
        monkeypatch.setattr(sys, "stdin", None)  # a daemon's, closed
        assert not asks_on_a_terminal()
    finally:
        for descriptor in (leader, follower, reading, writing):
            os.close(descriptor)


def months_from_now(months: int) -> str:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def reset_month(
    monkeypatch: pytest.MonkeyPatch, *args: str, terminal: bool, answer: str | None = None
) -> tuple[int, list[str]]:
    """``ledger reset-month ARGS`` with a database nothing listens at: its exit code and
    stderr's lines. "cannot connect" is how far a run that went on got."""
    monkeypatch.setattr(cli_accounts, "asks_on_a_terminal", lambda: terminal)
    result = CliRunner().invoke(
        main, ["reset-month", *args], input=answer, env={"DATABASE_URL": NOTHING_LISTENS}
    )
    return result.exit_code, result.stderr.splitlines()


def test_a_period_far_ahead_asked_on_a_terminal_and_refused_resets_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    far = months_from_now(3)

    code, said = reset_month(monkeypatch, "--period", far, terminal=True, answer="n\n")

    assert code == 1
    assert said[0].startswith(f"--period {far} is ")
    assert " months after this month (" in said[0]
    assert said[0].endswith(
        f"refuses every earlier period from then on. Reset every account for {far}? [y/N]: n"
    )
    assert said[1:] == [f"Error: nothing was reset: --period {far} was not confirmed"]


def test_a_period_far_ahead_is_asked_with_no_for_default(monkeypatch: pytest.MonkeyPatch) -> None:
    far = months_from_now(5)

    code, said = reset_month(monkeypatch, "--period", far, terminal=True, answer="\n")

    assert code == 1
    assert said[-1] == f"Error: nothing was reset: --period {far} was not confirmed"


def test_a_period_far_ahead_confirmed_on_a_terminal_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    far = months_from_now(3)

    code, said = reset_month(monkeypatch, "--period", far, terminal=True, answer="y\n")

    assert code == 1
    assert said[0].endswith(f"Reset every account for {far}? [y/N]: y")
    assert said[1].startswith(f"Error: cannot connect to {NOTHING_LISTENS} (")


def test_a_period_far_ahead_elsewhere_is_one_warning_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not on a terminal (cron, a script) nothing can answer: the contract's reset-month
    takes any period, so the run goes on and says so once."""
    far = months_from_now(3)

    code, said = reset_month(monkeypatch, "--period", far, terminal=False)

    assert code == 1
    assert said[0].startswith(f"warning: --period {far} is ")
    assert said[0].endswith("refuses every earlier period from then on")
    assert said[1].startswith(f"Error: cannot connect to {NOTHING_LISTENS} (")


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "elsewhere"])
@pytest.mark.parametrize(
    ("args", "months"),
    [(("--yes",), 3), ((), 1), ((), 0), ((), -2)],
    ids=["--yes", "next month", "this month", "a month before"],
)
def test_yes_or_a_period_at_most_a_month_ahead_is_neither_asked_nor_warned_of(
    monkeypatch: pytest.MonkeyPatch, terminal: bool, args: tuple[str, ...], months: int
) -> None:
    code, said = reset_month(
        monkeypatch, "--period", months_from_now(months), *args, terminal=terminal
    )

    assert code == 1
    [line] = said
    assert line.startswith(f"Error: cannot connect to {NOTHING_LISTENS} (")

"""``ledger accounts open`` and ``ledger reset-month``: the commands that write to accounts
(``accounts show|list`` are among the read-only commands, api/cli_inspect.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from api.cli_support import (
    WholeNumber,
    account_id_option,
    plural,
    progress,
    run_with_services,
    settings_from_env,
)
from ledger.domain.limits import MAX_MONTHLY_ALLOWANCE

if TYPE_CHECKING:
    from api.services import Services
    from ledger.service import Ledger


@click.group("accounts")
def accounts_group() -> None:
    """Open and inspect accounts."""


@accounts_group.command("open")
@click.argument("account_id", callback=account_id_option)
@click.option(
    "--allowance",
    type=WholeNumber(min=0, max=MAX_MONTHLY_ALLOWANCE),
    default=None,
    help="Monthly allowance in credits (default: DEFAULT_MONTHLY_ALLOWANCE).",
)
def open_account(account_id: str, allowance: int | None) -> None:
    """Open ACCOUNT_ID with its monthly allowance available at once.

    \b
    ledger accounts open acct_42 --allowance 5000
    """
    from ledger.commands import OpenAccount
    from ledger.domain.errors import AccountAlreadyExists, InvalidAccountId

    settings = settings_from_env(service=False)
    monthly = settings.default_monthly_allowance if allowance is None else allowance
    command = OpenAccount(account_id=account_id, monthly_allowance=monthly)
    try:
        account = run_with_services(settings, lambda s: s.ledger.execute(command))
    except AccountAlreadyExists:
        raise click.ClickException(f"account {account_id} already exists") from None
    except InvalidAccountId as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"opened {account.account_id}: monthly allowance {account.monthly_allowance}, "
        f"period {account.period}"
    )


async def reset_accounts(
    ledger: Ledger,
    account_ids: list[str],
    period: str | None,
    done: Callable[[int], object],
    unloadable: list[str] | None = None,
) -> tuple[int, int, list[str]]:
    """Reset each account for ``period``; (reset, already reset, reset for a later period).

    No period: the month (UTC) the run began in, for every account, also when the run
    crosses the end of a month (each account's own moment would split it across two).
    ``unloadable``: where an account whose stream cannot be loaded is noted (with why) and
    passed over; without it, its error ends the run.
    """
    from ledger.commands import ResetMonth
    from ledger.domain.errors import PeriodOutOfOrder
    from ledger.handlers.accounts import MonthReset, billing_period
    from ledger.store.repository import UnreadableStream

    period = period or billing_period(ledger.clock())
    reset = unchanged = 0
    refused = []
    for account_id in account_ids:
        try:
            after: MonthReset = await ledger.execute(
                ResetMonth(account_id=account_id, period=period)
            )
        except PeriodOutOfOrder:
            refused.append(account_id)
        except UnreadableStream as error:
            if unloadable is None:
                raise
            unloadable.append(f"{account_id}: {error}")
        else:
            if after.started:
                reset += 1
            else:
                unchanged += 1
        done(1)
    return reset, unchanged, refused


async def reset_every_account(
    ledger: Ledger,
    period: str | None,
    done: Callable[[int], object],
    account_ids: list[str] | None = None,
    unloadable: list[str] | None = None,
) -> tuple[int, int, list[str]]:
    """``reset_accounts`` of every opened account (``account_ids``: the list just read), also
    those whose opening commits while the run goes on: the accounts are listed again after
    each pass until none is new, or none of the new ones needed a reset (opened in the
    period, as those opening from then on are: with sign-ups all the while, a list with
    none new seldom came).

    An account opened in the month before (stamped before midnight) whose commit came
    after the list was read kept that month's period, and its allowance was not reset for
    the month the run was for: a cron run once a month left it so until the next one.
    """
    from ledger.handlers.accounts import billing_period

    period = period or billing_period(ledger.clock())
    reset = unchanged = 0
    refused: list[str] = []
    seen: set[str] = set()
    listed = await ledger.all_account_ids() if account_ids is None else account_ids
    first = True
    while new := [a for a in listed if a not in seen]:
        seen.update(new)
        more_reset, more_unchanged, more_refused = await reset_accounts(
            ledger, new, period, done, unloadable
        )
        reset, unchanged = reset + more_reset, unchanged + more_unchanged
        refused += more_refused
        if not (first or more_reset):
            break
        first = False
        listed = await ledger.all_account_ids()
    return reset, unchanged, refused


def months_after(period: str, moment: datetime) -> int:
    """How many months ``period`` (``YYYY-MM``) comes after the month of ``moment`` in UTC
    (0: that month; negative: one before it)."""
    moment = moment.astimezone(UTC)
    return (int(period[:4]) - moment.year) * 12 + int(period[5:7]) - moment.month


def asks_on_a_terminal() -> bool:
    """Whether a command may ask its operator: its stdin is a terminal (cron's, a pipe's or
    a CI job's is not, and a question there would wait for an answer that never comes)."""
    return sys.stdin is not None and sys.stdin.isatty()


def confirm_a_period_ahead(period: str, now: datetime, on_a_terminal: bool) -> None:
    """Ask before a reset for a ``period`` more than one month after ``now``'s (UTC): an
    account reset for it refuses every earlier period for good (409), so a typo (2062-01
    for 2026-01) ended monthly resets for decades. On a terminal the answer is asked,
    default No (No: ``ClickException``, exit 1, nothing reset); elsewhere a warning on
    stderr, and the run goes on: the period may be the caller's own billing cycle."""
    ahead = months_after(period, now)
    if ahead <= 1:
        return
    said = (
        f"--period {period} is {ahead} months after this month ({now.astimezone(UTC):%Y-%m}, "
        "UTC): an account reset for it refuses every earlier period from then on"
    )
    if not on_a_terminal:
        click.echo(f"warning: {said}", err=True)
        return
    if not click.confirm(f"{said}. Reset every account for {period}?", default=False, err=True):
        raise click.ClickException(f"nothing was reset: --period {period} was not confirmed")


@click.command("reset-month")
@click.option("--period", metavar="YYYY-MM", help="The period (default: the current month, UTC).")
@click.option(
    "--yes",
    is_flag=True,
    help="Reset for a --period more than one month ahead without asking (or warning).",
)
def reset_month(period: str | None, yes: bool) -> None:
    """Reset every account's monthly allowance for a period; safe to run twice or from cron.

    A --period more than one month after the current one (UTC) is asked about first on a
    terminal (default No), and warned of on stderr elsewhere: an account reset for a period
    refuses every earlier one from then on. --yes skips both.
    """
    from ledger.domain.account import check_period
    from ledger.domain.errors import InvalidPeriod

    if period is not None:
        try:
            check_period(period)
        except InvalidPeriod as error:
            raise click.BadParameter(str(error), param_hint="--period") from None
        if not yes:
            confirm_a_period_ahead(period, datetime.now(UTC), asks_on_a_terminal())

    unloadable: list[str] = []

    async def run(services: Services) -> tuple[int, int, list[str]]:
        account_ids = await services.ledger.all_account_ids()
        with progress(len(account_ids), "accounts") as bar:
            return await reset_every_account(
                services.ledger, period, bar.update, account_ids, unloadable
            )

    reset, unchanged, refused = run_with_services(settings_from_env(service=False), run)
    click.echo(f"reset {plural(reset, 'account')}; {unchanged:,} already reset for this period")
    if refused:
        one = len(refused) == 1
        click.echo(
            f"{plural(len(refused), 'account')} {'was' if one else 'were'} reset for a later "
            f"period already and {'was' if one else 'were'} left alone: "
            f"{', '.join(refused[:10])}{' …' if len(refused) > 10 else ''}",
            err=True,
        )
    if unloadable:
        # The others are reset; these wait for a repair, and the run says it is not done.
        for line in unloadable:
            click.echo(f"not reset: {line}", err=True)
        raise click.ClickException(
            f"{plural(len(unloadable), 'account')} could not be loaded and "
            f"{'was' if len(unloadable) == 1 else 'were'} not reset (see `ledger audit verify`)"
        )

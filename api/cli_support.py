"""What the ``ledger`` commands share: settings, services, progress bars, plurals."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from api.settings import Settings, SettingsError
from ledger.text import decimal_number, is_utf8_text, is_whole_number

if TYPE_CHECKING:
    from api.database import Database
    from api.services import Services

T = TypeVar("T")


def settings_from_env(*, serving: bool = False, service: bool = True) -> Settings:
    """The settings, or the command ends with every bad value named (also of the variables
    read outside Settings, which would otherwise fail later, as a traceback; with
    ``serving``, what ``ledger serve`` needs besides, in the same one line; without
    ``service``, only what a command of the database alone needs: ``run_with_database``)."""
    from api.cli_config import extra_variable_problems
    from api.settings import serving_problems

    more = [*extra_variable_problems(os.environ), *(serving_problems() if serving else [])]
    try:
        settings = Settings.from_env(service=service)
    except SettingsError as error:
        raise click.ClickException(_in_one_line([*error.problems, *more])) from None
    if more:
        raise click.ClickException(_in_one_line(more))
    return settings


def _in_one_line(problems: list[str]) -> str:
    """Every problem, in one line; several end saying where to read them one a line (a
    production environment set up from nothing was five in one line of 500 characters)."""
    if len(problems) == 1:
        return problems[0]
    return f"{'; '.join(problems)} ({len(problems)} problems: `ledger config check` lists them)"


def run_with_services(
    settings: Settings,
    work: Callable[[Services], Awaitable[T]],
    *,
    stripe_api_base: str | None = None,
    payments: bool = False,
) -> T:
    """Run ``work(services)`` in an event loop of its own, the services closed after
    (``payments``: see ``api.services.open_services``; a command that talks to Stripe says
    ``payments=True`` and reads its settings with ``settings_from_env()``, the others
    ``settings_from_env(service=False)``)."""
    from api.services import open_services
    from ledger import event_loop

    async def run() -> T:
        async with open_services(
            settings, stripe_api_base=stripe_api_base, payments=payments
        ) as services:
            return await work(services)

    return event_loop.run(run())


def run_with_database(
    settings: Settings,
    work: Callable[[Database], Awaitable[T]],
    *,
    set_up_first: bool = True,
    server_settings: dict[str, str] | None = None,
    role: str | None = None,
) -> T:
    """Run ``work(database)`` in an event loop of its own, the pool closed after.

    Opens no Stripe client and needs no page key, unlike ``run_with_services``: an auditor's
    or a checkpoint signer's host, the projector's or the relay's holds the database's URL
    and none of the service's secrets (``set_up_first``, ``role``: see
    ``api.database.service_url``, None: the service's; ``server_settings``: the pool's
    sessions', ``create_pool``'s)."""
    from api.database import SERVICE_SETTINGS, open_database
    from ledger import event_loop
    from ledger.store.migrate import SERVICE_ROLE

    async def run() -> T:
        async with open_database(
            settings,
            set_up_first=set_up_first,
            server_settings=server_settings or SERVICE_SETTINGS,
            role=role or SERVICE_ROLE,
        ) as database:
            return await work(database)

    return event_loop.run(run())


MAX_JOBS = 64
"""The most worker processes ``--jobs`` starts, each with a connection of its own: 99,999
started processes until the machine ground to a halt (a PostgreSQL takes 100 connections
unless told otherwise)."""

EVENTS_PER_JOB = 150_000
"""The events each process of a default ``--jobs`` gets at least. Starting the workers
costs about 1 s (spawned, imported, connected, in the snapshot): `make run`'s 5 events took
2.6 s to verify with one process per CPU, 0.1 s with one. On 2 vCPUs (with other work
running) 2 jobs verified 1,000 to 300,000 generated events slower than 1 (+0.6 to +4.3 s),
and rebuilt 300,000 about as fast; the split gains 1.3-1.45x only on the work after the
start (docs/scaling.md), which needs a few hundred thousand events to outweigh it."""


def default_jobs(head_position: int) -> int:
    """``--jobs`` when it is not given, for ``audit verify`` and ``projections rebuild``:
    one process per ``EVENTS_PER_JOB`` events up to the store's last position (a cheap
    measure of its size), at least 1, at most one per CPU and ``MAX_JOBS``."""
    cpus = min(os.cpu_count() or 1, MAX_JOBS)
    return max(1, min(head_position // EVENTS_PER_JOB, cpus))


class WholeNumber(click.IntRange):
    """click's ``IntRange``, reading only what ``is_whole_number`` takes (spaces around
    allowed, as in a variable). ``IntRange`` converts with int(): `accounts open
    --allowance 1_000` opened an account with 1,000 credits a month and `--allowance ٣` one
    with 3, where DEFAULT_MONTHLY_ALLOWANCE and the API refuse both."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not is_whole_number(value.strip()):
            # Not click's "is not a valid integer range.": a range is what it is checked
            # against next, and the variables say "must be a whole number".
            self.fail(f"{value!r} is not a whole number.", param, ctx)
        return super().convert(value, param, ctx)


class DecimalNumber(click.FloatRange):
    """click's ``FloatRange``, refusing NaN (no comparison with it is true, so it passed
    every range: `audit verify --max-time-skew nan` failed after connecting, as an
    "unexpected error") and what only Python's float() reads as a number ('1_0', '٣').
    ``inf`` and exponents (``2e9``) are numbers."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and decimal_number(value.strip()) is None:
            self.fail(f"{value!r} is not a number.", param, ctx)
        return super().convert(value, param, ctx)


def jobs_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--jobs`` as ``audit verify`` and ``projections rebuild`` take it, each with its own
    ``help``: not given, ``default_jobs`` of the store, as the default shown says."""
    return click.option(
        "--jobs",
        type=WholeNumber(min=1, max=MAX_JOBS),
        show_default=f"one per {EVENTS_PER_JOB:,} events, at most one per CPU",
        help=help,
    )


def account_id_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An ACCOUNT_ID argument or option (a click callback), refused before the database is
    reached when no account can have it: a typo waited for the embedded server to start,
    or was "cannot connect" when the database was away, and a 100,000-character id came
    back whole in "no account …"."""
    from ledger.domain.account import check_account_id
    from ledger.domain.errors import InvalidAccountId

    if value is None:
        return None
    try:
        check_account_id(value)
    except InvalidAccountId as error:
        raise click.BadParameter(str(error)) from None
    return value


def utf8_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A text argument or option the ledger stores or looks up (a click callback): one
    holding bytes that are not UTF-8 is a usage error before the database is reached. It was
    an "unexpected error" (a reason, whose claim could not be encoded) or a "database
    error" (a token's name, a page's ``--after``), exit 1."""
    if value is not None and not is_utf8_text(value):
        raise click.BadParameter("is not UTF-8 text")
    return value


def plural(count: int, singular: str) -> str:
    """``1 account``, ``2 accounts``, ``1,000 accounts``."""
    return f"{count:,} {singular if count == 1 else singular + 's'}"


class Progress:
    """A progress bar on standard error, drawn only when that is a terminal.

    Counts are whole numbers (no ``1.2k``). The total is an estimate some
    commands cannot know exactly (positions have gaps, events arrive meanwhile):
    it grows when passed, and a bar that finishes shows 100 %.
    """

    def __init__(
        self, total: int, unit: str, *, description: str = "", enabled: bool = True
    ) -> None:
        self.count = 0
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=max(total, 0),
                unit=f" {unit}",
                unit_scale=False,
                dynamic_ncols=True,
                file=sys.stderr,
                desc=description or None,
            )

    def update(self, count: int) -> None:
        self.count += count
        if self._bar is None:
            return
        if self.count > self._bar.total:
            self._bar.total = self.count
        self._bar.update(count)

    def finish(self) -> None:
        """Done: whatever the estimate was, the bar ends at 100 %."""
        if self._bar is not None:
            self._bar.total = self.count
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def progress(
    total: int, unit: str, *, description: str = "", enabled: bool = True
) -> Iterator[Progress]:
    """``with progress(n, "events") as bar: bar.update(k)``; 100 % when the block ends well."""
    bar = Progress(total, unit, description=description, enabled=enabled)
    try:
        yield bar
        bar.finish()
    finally:
        bar.close()

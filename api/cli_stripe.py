"""``ledger stripe reconcile``: apply what Stripe knows about purchases still pending here."""

from __future__ import annotations

import logging
import socket
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click
import msgspec

from api.cli_exits import CouldNotRun, exit_2_when_it_cannot_run
from api.cli_support import (
    WholeNumber,
    account_id_option,
    plural,
    progress,
    run_with_services,
    settings_from_env,
)
from api.reconcile_defaults import DEFAULT_LIMIT, DEFAULT_OLDER_THAN, RECONCILE_WINDOW
from api.settings import Settings

if TYPE_CHECKING:
    from api.services import Services
    from ledger.reconcile import Reconciled


@click.group("stripe")
def stripe_group() -> None:
    """Stripe: reconcile purchases whose webhooks were missed."""


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    from api.reconcile import parse_duration

    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    from api.reconcile import parse_since

    if value is None or value.strip().lower() == "all":
        return None
    try:
        return parse_since(value, datetime.now(UTC))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _standin_base(settings: Settings) -> str | None:
    """In development without a Stripe key: the stand-in `ledger serve` runs, if it runs."""
    if settings.production or not settings.uses_standin or settings.stripe_api_base:
        return None
    port = settings.stripe_standin_port
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        raise click.ClickException(
            f"STRIPE_SECRET_KEY is not set and no Stripe stand-in answers on port {port} "
            "(STRIPE_STANDIN_PORT): start `make run` first, or set STRIPE_SECRET_KEY "
            "(or STRIPE_API_BASE)"
        ) from None
    return f"http://127.0.0.1:{port}"


_SAID = {
    "credited": "credited",
    "expired": "closed as expired",
    "failed": "closed as failed",
    "mismatched": "recorded as paid another amount (not credited; look at it)",
    "unchanged": "nothing to apply",
    "settled": "settled here already",
}


def _line(result: Reconciled) -> str:
    found = f"{result.found} at Stripe" if result.found else ""
    said = f"error: {result.detail}" if result.outcome == "error" else _SAID[result.outcome]
    return (
        f"{result.session_id}  {result.account_id}  {result.credits:,} credits  "
        f"{found + ': ' if found else ''}{said}"
    )


@stripe_group.command("reconcile")
@click.option(
    "--since",
    default=f"{RECONCILE_WINDOW.days}d",
    show_default=True,
    callback=_since,
    metavar="DURATION|DATE",
    help="Only purchases created since then: a duration back from now (12h, 7d), a date "
    "(2026-11-01, UTC), a time (2026-11-01T09:00:00Z), or `all`.",
)
@click.option(
    "--older-than",
    default=f"{int(DEFAULT_OLDER_THAN.total_seconds() // 60)}m",
    show_default=True,
    callback=_duration,
    metavar="DURATION",
    help="Leave younger purchases to their webhooks (0: check them too).",
)
@click.option(
    "--account", "account_id", callback=account_id_option, help="Only this account's purchases."
)
@click.option(
    "--limit",
    type=WholeNumber(1, 100_000),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="At most this many purchases, oldest first.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one purchase each.")
def reconcile_command(
    since: datetime | None,
    older_than: timedelta,
    account_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Ask Stripe about every purchase still pending here, and apply what it says.

    A session paid at Stripe is credited, an expired or failed one is closed,
    exactly as its webhook would have done (once: running this again, or the
    webhook arriving later, changes nothing).

    \b
    Exit codes:
      0  every pending purchase checked, what Stripe said applied
      1  findings: a purchase paid another amount than asked (recorded, not
         credited: look at it), and every other one checked
      2  could not check them all: Stripe could not be asked about some (or one
         was busy; its line says why: the next run tries again), or not at all
         (the database unreachable or not set up, a usage error, no Stripe, an
         --account that does not exist)
    """
    # 1 and 2 apart, as `audit verify`'s: a cron job's monitor tells "look at this purchase"
    # from "the run did not do its work".
    with exit_2_when_it_cannot_run():
        results = _reconcile_and_report(since, older_than, account_id, limit, as_json)
    not_checked = sum(1 for result in results if result.outcome == "error")
    if not_checked:
        why = "its line says why" if not_checked == 1 else "their lines say why"
        raise CouldNotRun(
            f"{plural(not_checked, 'purchase')} could not be checked ({why}); "
            "the next run tries again"
        )
    if any(result.outcome == "mismatched" for result in results):
        sys.exit(1)


def _reconcile_and_report(
    since: datetime | None,
    older_than: timedelta,
    account_id: str | None,
    limit: int,
    as_json: bool,
) -> list[Reconciled]:
    """The run and its lines; what became of each purchase."""
    from api.reconcile import checkout_lookup, pending_checkouts
    from ledger.reconcile import reconcile

    settings = settings_from_env()
    stripe_api_base = _standin_base(settings)
    if not logging.getLogger().isEnabledFor(logging.INFO):
        # Each session's line below says what the service's log would (unless -v).
        logging.getLogger("ledger.reconcile").setLevel(logging.ERROR)

    async def run(services: Services) -> list[Reconciled]:
        # Else a mistyped id found no pending purchase, and exited 0 as a run with nothing
        # to do: a cron job's monitor read it as all checked.
        if account_id is not None and not await services.ledger.account_exists(account_id):
            raise click.ClickException(f"account {account_id} does not exist")
        lookup = checkout_lookup(services)
        pending = await pending_checkouts(
            services, since=since, older_than=older_than, account_id=account_id, limit=limit
        )
        # One Stripe call after another: a thousand take minutes.
        with progress(len(pending), "purchases", enabled=bool(pending) and not as_json) as bar:
            return await reconcile(services.ledger, lookup, pending, lambda _: bar.update(1))

    results = run_with_services(settings, run, stripe_api_base=stripe_api_base, payments=True)
    for result in results:
        click.echo(msgspec.json.encode(result).decode() if as_json else _line(result))
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    if not results:
        click.echo("no pending purchases to check", err=True)
    else:
        click.echo(
            f"checked {plural(len(results), 'pending purchase')}: "
            + ", ".join(f"{count:,} {outcome}" for outcome, count in sorted(counts.items())),
            err=True,
        )
    return results

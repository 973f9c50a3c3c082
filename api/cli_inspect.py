"""``ledger accounts show|list``, ``ledger tokens list``, ``ledger projections status``.

Read-only commands for operators. ``accounts show`` reads the account's own
events (always current); the lists read the views, and say so when the
projector is behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
import msgspec

from api.cli_support import (
    WholeNumber,
    account_id_option,
    plural,
    run_with_services,
    settings_from_env,
    utf8_text,
)
from ledger.times import duration
from projections.names import VIEW_NAMES

if TYPE_CHECKING:
    from api.services import Services


def _when(moment: datetime | None, never: str = "never") -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else never


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Columns padded to their widest cell; numbers (``right``) aligned right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(
            str(cell).rjust(width) if i in right else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in (header, *rows)
    ]


def _echo_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


async def _views_behind(services: Services, name: str) -> int:
    """How many events the view has yet to apply."""
    head = await services.store.head_position()
    [position] = await services.views.positions([name])
    return max(head - position.position, 0)


def _warn_if_behind(view: str, behind: int) -> None:
    if behind:
        click.echo(
            f"note: the {view} view is {plural(behind, 'event')} behind the store "
            "(is the projector running? `ledger projections status`)",
            err=True,
        )


class AccountReport(msgspec.Struct, kw_only=True):
    account_id: str
    period: str
    balance: int
    allowance_remaining: int
    monthly_allowance: int
    next_monthly_allowance: int
    topup_balance: int
    granted: int
    active_grants: int
    held: int
    available: int
    open_holds: int
    low_balance_threshold: int
    low_balance_threshold_set: bool
    events: int
    opened_at: datetime
    last_changed_at: datetime
    purchases: list[dict[str, Any]]


@click.command("show")
@click.argument("account_id", callback=account_id_option)
@click.option("--json", "as_json", is_flag=True, help="Print it as one JSON object.")
def show_account(account_id: str, as_json: bool) -> None:
    """Show ACCOUNT_ID's balance, allowance, grants, top-ups, holds and latest purchases."""
    from ledger.domain.errors import AccountNotFound

    async def run(services: Services) -> AccountReport:
        try:
            account = await services.ledger.account(account_id, fresh=True)
        except AccountNotFound:
            raise click.ClickException(f"no account {account_id}") from None
        # The events and times recorded; the balances as account_now (a balance read) shows
        # them, which counts the expiries due on this copy as events, at the clock's time.
        events, opened_at, last_changed_at = (
            account.version,
            account.created_on,
            account.modified_on,
        )
        account = services.ledger.as_now(account)
        purchases = await services.views.purchases(account_id, limit=5)
        return AccountReport(
            account_id=account.account_id,
            period=account.period,
            balance=account.balance,
            allowance_remaining=account.allowance_remaining,
            monthly_allowance=account.monthly_allowance,
            next_monthly_allowance=account.next_monthly_allowance,
            topup_balance=account.topup_balance,
            granted=account.granted,
            active_grants=sum(1 for grant in account.grants.values() if grant.status == "active"),
            held=account.held,
            available=account.available,
            open_holds=len(account.holds),
            low_balance_threshold=account.effective_low_balance_threshold,
            low_balance_threshold_set=account.low_balance_threshold is not None,
            events=events,
            opened_at=opened_at,
            last_changed_at=last_changed_at,
            purchases=[
                {
                    "session_id": p.session_id,
                    "credits": p.credits,
                    "status": p.status,
                    "created_at": p.created_at,
                }
                for p in purchases
            ],
        )

    report = run_with_services(settings_from_env(service=False), run)
    if as_json:
        _echo_json(report)
        return
    allowance = f"{report.allowance_remaining:,} of {report.monthly_allowance:,} left"
    if report.next_monthly_allowance != report.monthly_allowance:
        allowance += f" (next period: {report.next_monthly_allowance:,})"
    threshold = f"{report.low_balance_threshold:,}" + (
        "" if report.low_balance_threshold_set else " (default: 10 % of the allowance)"
    )
    for label, value in (
        ("account", report.account_id),
        ("period", report.period),
        ("balance", f"{report.balance:,}"),
        ("  allowance", allowance),
        ("  grants", f"{report.granted:,} in {plural(report.active_grants, 'active grant')}"),
        ("  top-ups", f"{report.topup_balance:,}"),
        ("held", f"{report.held:,} in {plural(report.open_holds, 'open hold')}"),
        ("available", f"{report.available:,}"),
        ("low balance below", threshold),
        ("events", f"{report.events:,}"),
        ("opened", _when(report.opened_at)),
        ("last changed", _when(report.last_changed_at)),
    ):
        click.echo(f"{label:<18} {value}")
    if not report.purchases:
        click.echo(f"{'purchases':<18} none")
    for n, purchase in enumerate(report.purchases):
        click.echo(
            f"{'latest purchases' if n == 0 else '':<18} {purchase['session_id']}  "
            f"{purchase['credits']:,} credits  {purchase['status']}  "
            f"{_when(purchase['created_at'])}"
        )


@click.command("list", short_help="List accounts by id with their balances.")
@click.option("--after", callback=utf8_text, help="Start after this account id (the next page).")
@click.option(
    "--limit", type=WholeNumber(1, 100_000), default=100, show_default=True, help="How many."
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one account each.")
def list_accounts(after: str | None, limit: int, as_json: bool) -> None:
    """List accounts by id with their balances, from the balances view.

    An account whose row is behind its events, or still counts a hold or grant past its
    expiry, is read from its events instead, as GET /v1/credits reads it.
    """

    unloadable: list[str] = []

    async def run(services: Services) -> tuple[list[Any], int]:
        from api.schemas import AccountCredits
        from ledger.store.repository import UnreadableStream

        rows = await services.views.balances_page(after=after, limit=limit + 1)
        # As a balance read: an account whose row is behind its events, or counts a hold or
        # grant past its expiry not recorded yet, as a spend now finds it (the write side).
        due = await services.views.left_to_the_write_side(
            [row.account_id for row in rows], services.ledger.clock()
        )
        shown: list[Any] = []
        for row in rows:
            if row.account_id in due:
                try:
                    shown.append(
                        AccountCredits.of(await services.ledger.account_now(row.account_id))
                    )
                    continue
                except UnreadableStream as error:  # listed as its row has it, and said
                    unloadable.append(f"{row.account_id}: listed as its view has it; {error}")
            shown.append(row)
        return shown, await _views_behind(services, "balances")

    rows, behind = run_with_services(settings_from_env(service=False), run)
    more = len(rows) > limit
    rows = rows[:limit]
    if as_json:
        for row in rows:
            _echo_json(
                {
                    "account_id": row.account_id,
                    "balance": row.balance,
                    "allowance_remaining": row.allowance_remaining,
                    "monthly_allowance": row.monthly_allowance,
                    "granted": row.granted,
                    "topup_balance": row.topup_balance,
                    "held": row.held,
                    "available": row.available,
                    "period": row.period,
                }
            )
    elif rows:
        for line in _table(
            ("ACCOUNT", "BALANCE", "ALLOWANCE LEFT", "GRANTS", "TOP-UPS", "HELD", "PERIOD"),
            [
                (
                    row.account_id,
                    f"{row.balance:,}",
                    f"{row.allowance_remaining:,} / {row.monthly_allowance:,}",
                    f"{row.granted:,}",
                    f"{row.topup_balance:,}",
                    f"{row.held:,}",
                    row.period,
                )
                for row in rows
            ],
            right={1, 2, 3, 4, 5},
        ):
            click.echo(line)
    click.echo(
        plural(len(rows), "account")
        + (f"; more after it: --after {rows[-1].account_id}" if more else ""),
        err=True,
    )
    for line in unloadable:
        click.echo(f"Warning: {line} (see `ledger audit verify`)", err=True)
    _warn_if_behind("balances", behind)


@click.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Also the revoked ones.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one token each.")
def list_tokens(include_revoked: bool, as_json: bool) -> None:
    """List tokens: id, scope, account or name, created, last used (never the secret)."""
    found = run_with_services(
        settings_from_env(service=False),
        lambda s: s.tokens.list_tokens(include_revoked=include_revoked),
    )
    if as_json:
        for token in found:
            _echo_json(token)
        return
    header = ["ID", "SCOPE", "FOR", "CREATED", "LAST USED"]
    if include_revoked:
        header.append("REVOKED")
    rows = []
    for token in found:
        who = f"account {token.account_id}" if token.account_id else token.name or "(unnamed)"
        row = [token.token_id, token.scope, who, _when(token.created_at), _when(token.last_used_at)]
        if include_revoked:
            row.append(_when(token.revoked_at, "-"))
        rows.append(row)
    if rows:
        for line in _table(header, rows, right=set()):
            click.echo(line)
    click.echo(plural(len(found), "token") + ("" if include_revoked else " (live)"), err=True)


@click.command("status", short_help="Each view's position and how far it is behind.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one view each.")
def projections_status(as_json: bool) -> None:
    """Each view's position and how far it is behind the store: in events, and in time
    (the age of the oldest event it has not applied: `3 h 25 min`; --json gives
    lag_seconds)."""

    async def run(services: Services) -> tuple[int, list[Any]]:
        head = await services.store.head_position()
        return head, await services.views.positions(VIEW_NAMES)

    head, positions = run_with_services(settings_from_env(service=False), run)
    if as_json:
        for view in positions:
            _echo_json(
                {
                    "view": view.name,
                    "position": view.position,
                    "head": head,
                    "behind": max(head - view.position, 0),
                    "lag_seconds": round(view.lag_seconds, 3),
                    "updated_at": view.updated_at,
                }
            )
        return
    click.echo(f"event store at position {head:,}")
    for line in _table(
        ("VIEW", "POSITION", "BEHIND", "LAG", "UPDATED"),
        [
            (
                view.name,
                f"{view.position:,}",
                plural(max(head - view.position, 0), "event"),
                duration(view.lag_seconds),
                _when(view.updated_at),
            )
            for view in positions
        ],
        right={1, 2, 3},
    ):
        click.echo(line)

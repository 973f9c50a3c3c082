"""``ledger relay``: every stored event, in commit order, published to NATS JetStream."""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from api.cli_logging import log_at_least_info
from api.cli_support import WholeNumber, run_with_database, settings_from_env


@click.command("relay")
@click.option(
    "--to",
    "url",
    envvar="LEDGER_RELAY_URL",
    default=None,
    help="The NATS server (or set LEDGER_RELAY_URL); nats://127.0.0.1:4222 if neither "
    "(development only).",
)
@click.option(
    "--subject-prefix",
    default="ledger.events",
    show_default=True,
    help="Each event goes to PREFIX.<Type> (PREFIX.CreditsSpent).",
)
@click.option("--stream", default="LEDGER_EVENTS", show_default=True, help="Created if missing.")
@click.option(
    "--tls-ca",
    envvar="LEDGER_RELAY_TLS_CA",
    default=None,
    help="CA certificates (PEM) a tls:// server's is checked against, in place of the "
    "system's (or set LEDGER_RELAY_TLS_CA).",
)
@click.option(
    "--duplicate-window",
    type=WholeNumber(min=1, max=7 * 24 * 3600),  # a week
    default=120,
    show_default=True,
    help="Seconds, for a stream it creates.",
)
@click.option(
    "--batch-size",
    type=WholeNumber(1, 10_000),
    default=500,
    show_default=True,
    help="Events read and published at once.",
)
def relay_command(
    url: str | None,
    subject_prefix: str,
    stream: str,
    tls_ca: str | None,
    duplicate_window: int,
    batch_size: int,
) -> None:
    """Publish every stored event, in commit order, to NATS JetStream until stopped (Ctrl-C).

    Each event goes to PREFIX.<Type> once; see docs/relay.md.
    """
    import signal

    # Asked to stop while still starting: nothing published yet, so a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    from ledger.store.migrate import RELAY_ROLE
    from relay.runner import (
        DEFAULT_URL,
        RelayRefused,
        production_problems,
        relay_settings,
        run_until_stopped,
    )

    log_at_least_info()
    # The database alone: the relay's host holds none of the service's secrets (Stripe's).
    settings = settings_from_env(service=False)
    if settings.production and (problems := production_problems(url)):
        raise click.ClickException("; ".join(problems))
    try:
        relay_settings(url=url or DEFAULT_URL)  # alone first: its refusal names where it came from
    except ValueError as error:
        source = click.get_current_context().get_parameter_source("url")
        named = "LEDGER_RELAY_URL" if source is ParameterSource.ENVIRONMENT else "'--to'"
        raise click.BadParameter(str(error), param_hint=named) from None
    try:
        chosen = relay_settings(
            url=url or DEFAULT_URL,
            subject_prefix=subject_prefix,
            stream=stream,
            duplicate_window_seconds=duplicate_window,
            batch_size=batch_size,
            tls_ca=tls_ca,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        run_with_database(
            settings,
            lambda d: run_until_stopped(d.store, d.pool, d.database_url, chosen),
            role=RELAY_ROLE,  # reads the store, moves its own position: nothing else
        )
    except RelayRefused as error:
        raise click.ClickException(str(error)) from None

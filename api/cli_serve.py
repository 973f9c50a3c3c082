"""``ledger serve``: the API on $HOST:$PORT, in one process or several, with the projector
in a process of its own beside it."""

from __future__ import annotations

import logging
import os
import sys

import click
import msgspec

from api.cli_logging import log_at_least_info, verbosity_given
from api.cli_support import WholeNumber, settings_from_env
from api.settings import MAX_WORKERS, Settings


@click.command("serve")
@click.option(
    "--projector/--no-projector",
    default=True,
    show_default=True,
    help="Also run the projector, in a process of its own, to keep the views current.",
)
@click.option(
    "--workers",
    type=WholeNumber(min=1, max=MAX_WORKERS),
    default=None,
    help="API processes on the same port (default: WEB_CONCURRENCY, else 1). "
    "docs/scaling.md says how many for a machine.",
)
def serve(projector: bool, workers: int | None) -> None:
    """Serve the API on $HOST:$PORT (what `make run` starts), and /metrics on
    $METRICS_PORT when set.

    \b
    Exit codes:
      0    stopped (SIGTERM, Ctrl-C)
      1    a setting refused or a port taken (said on stderr), or a worker or the
           projector that ended badly
      3    the start-up failed: the database unreachable or refusing the service's
           role, any other error (the log's "cannot start: ..." line says why)
      130  Ctrl-C before the API was ready (every worker listening): "Aborted!";
           the next start makes again what it cut short
    """
    import signal

    from api.startup import (
        PortUnavailable,
        claim_ports,
        data_folder_problem,
        runs_standin,
        serve_on,
    )
    from api.workers import serve_workers, share_metrics_between, workers_from

    log_at_least_info()
    settings = settings_from_env(serving=True)
    try:
        processes = workers_from(workers)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if processes > 1 and runs_standin(settings):
        raise click.ClickException(
            "several workers need a Stripe they share: run the stand-in on its own "
            "(ledger dev standin --webhook-url URL/v1/stripe/webhook) and set "
            "STRIPE_API_BASE, or set the Stripe keys"
        )
    if problem := data_folder_problem(settings):
        raise click.ClickException(problem)
    share_metrics_between(processes)
    try:
        listening = claim_ports(settings)
    except PortUnavailable as error:
        for line in str(error).splitlines():
            click.echo(f"Error: {line}", err=True)
        sys.exit(1)

    from api.app import create_app
    from api.supervision import SupervisedProcess

    if processes > 1:
        # The workers share one database: an embedded one is started here, once.
        from api.database import resolve_database_url

        settings = msgspec.structs.replace(
            settings, database_url=resolve_database_url(settings.database_url, settings.data_dir)
        )
    app = create_app(settings, development_extras=not settings.production)
    # A process of its own gets the other core instead of competing with the API's
    # requests in one event loop (which, measured, let the views fall seconds behind).
    verbose = ["-" + "v" * verbosity_given()] if verbosity_given() else []
    child = SupervisedProcess(
        [sys.executable, "-m", "api.cli", *verbose, "project", "--supervised"], "the projector"
    )

    api_ready = False
    serving = os.getpid()  # not a forked worker, which inherits ``stopped``

    def ready(url: str) -> None:
        from api.database import describe

        nonlocal api_ready
        api_ready = True
        services = app.state.services
        metrics = (
            f"; /metrics on port {settings.metrics_port} only"
            if settings.metrics_port is not None
            else ""
        )
        logging.getLogger("ledger").info(
            "ledger API ready on %s (event store %s)%s",
            url,
            describe(services.database_url),
            metrics,
        )
        if projector:
            # Started once the API is up: it finds the database set up, and (with no
            # DATABASE_URL) the embedded server this process started.
            child.start(env=_child_env(settings, services.admin_url))

    def ready_workers(url: str, event_store: str) -> None:
        # The event store as the workers connect to it (the service's role), as one
        # process says it: DATABASE_URL's was the superuser's the set-up takes.
        logging.getLogger("ledger").info(
            "ledger API ready on %s (%d workers, event store %s)", url, processes, event_store
        )
        if projector:
            child.start(env={**os.environ, "DATABASE_URL": settings.database_url or ""})

    # On SIGTERM (or Ctrl-C) uvicorn finishes the requests in flight, runs the app's
    # shutdown (the pool closes), then raises the signal again; the default handlers
    # would end this process there, before the projector below is told to stop.
    def stopped(signum: int, _: object) -> None:
        if signum == signal.SIGINT and os.getpid() == serving and not api_ready:
            # A Ctrl-C before the API was ready ends as every command's does ("Aborted!",
            # 130): a first `make run` stopped in its set-up said "stopped" and exit 0.
            # (Forked workers inherit this handler: theirs end as they always have; once
            # they are forked, serve_workers handles the parent's, to the same end.)
            raise KeyboardInterrupt
        sys.exit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopped)
    try:
        # The metrics socket (METRICS_PORT), if any, is the same app: there it answers
        # /metrics only, and the API's port answers /metrics with 404 (api/metrics.py).
        if processes == 1:
            serve_on(app, listening, ready)
        elif (ended := serve_workers(app, listening, processes, ready_workers)) != 0:
            raise SystemExit(ended)  # 3: their start-up failed, as one worker's
    finally:
        # It commits what it has applied, drains what is visible, exits 0.
        code = child.stop() if projector else 0
        logging.getLogger("ledger").info("stopped")
        if code != 0:
            sys.exit(1)


def _child_env(settings: Settings, resolved_url: str | None) -> dict[str, str] | None:
    """The projector's environment: DATABASE_URL as this process resolved it."""
    if settings.database_url or settings.database_admin_url or not resolved_url:
        return None
    return {**os.environ, "DATABASE_URL": resolved_url}

"""``ledger project``: the projector alone, keeping the read views current (and sending the
webhook notifications that are due) until stopped; ``ledger serve`` runs it supervised."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import click

from api.cli_exits import error_in_one_line
from api.cli_logging import log_at_least_info
from api.cli_support import WholeNumber, run_with_database, settings_from_env
from ledger.heap import settle_after_start_up

if TYPE_CHECKING:
    from api.database import Database


@click.command("project")
@click.option(
    "--batch-size",
    type=WholeNumber(1, 10_000),
    default=500,
    show_default=True,
    help="Events per transaction.",
)
@click.option(
    "--dispatch/--no-dispatch",
    default=True,
    show_default=True,
    help="Also send the webhook notifications that are due (see docs/notifications.md).",
)
# Started by `ledger serve`: its start-up lines (the event store, stopping) are the server's.
@click.option("--supervised", is_flag=True, hidden=True)
def project(batch_size: int, dispatch: bool, supervised: bool) -> None:
    """Run the projector alone: keep the read views up to date until stopped (Ctrl-C).

    It also sends webhook notifications, unless --no-dispatch.
    """
    import asyncio
    import signal

    exit_now = ExitWhileStarting()
    signal.signal(signal.SIGTERM, exit_now)
    if supervised:
        from ledger.child_processes import SUPERVISOR_PID, stop_when_parent_ends

        if parent := os.environ.get(SUPERVISOR_PID):
            # `ledger serve` ended at once (SIGKILL, the OOM killer) stops nothing: this
            # process stops by itself then, as on a SIGTERM.
            stop_when_parent_ends(int(parent))

    from api.database import PROJECTOR_SETTINGS
    from ledger.notifications.dispatcher import Dispatcher
    from ledger.store.event_store import DATABASE_ERRORS
    from ledger.surprises import in_one_line
    from projections.events import UnreadableEvent
    from projections.runner import Projector, catch_up

    log_at_least_info()
    # The database alone, as the relay: no Stripe key or page key asked for (in production)
    # nor opened, so that its host may hold none (docker-compose.yml's projector).
    settings = settings_from_env(service=False)

    async def run(database: Database) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(*_: object) -> None:
            # Stopping from now on: a second SIGTERM (`ledger serve` stopping it after a
            # Ctrl-C that reached both) must not kill it while it drains and exits. Not
            # loop.add_signal_handler, nor a handler of ours left in place: closing the
            # loop, then the interpreter, would put the default one back (exit -15).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if not loop.is_closed():
                loop.call_soon_threadsafe(stop.set)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        if exit_now.asked:  # its SystemExit landed where it was swallowed (ExitWhileStarting)
            stop.set()
        if not supervised:
            from api.database import describe

            logging.getLogger("ledger").info("event store: %s", describe(database.database_url))
            await _say_a_projector_as_the_service(database)
        projector = Projector(database.store, database.database_url, batch_size=batch_size)
        work = [projector.run(stop)]
        if dispatch:
            dispatcher = Dispatcher(
                database.pool, database.database_url, allow_private=settings.webhook_allow_private
            )
            work.append(dispatcher.run(stop))
        settle_after_start_up()
        running = [asyncio.ensure_future(w) for w in work]
        try:
            await asyncio.gather(*running)
            # Stopped between batches (each committed with its position): apply what is
            # visible now, so that the writes of an API that stopped just before are in.
            try:
                await catch_up(database.store, projector.projections, batch_size)
            except (*DATABASE_ERRORS, UnreadableEvent) as error:
                logging.getLogger("projections.runner").warning(
                    "projector stopped behind: %s", error
                )
        except Exception as error:
            stop.set()  # the dispatcher finishes its deliveries and stops too
            await asyncio.gather(*running, return_exceptions=True)
            if isinstance(error, DATABASE_ERRORS):
                raise  # said in one line by the command group
            # A surprise (a view's bug, an event it cannot fold): one line and exit 1, which
            # `ledger serve` restarts from the views as committed, its memory of them gone.
            logging.getLogger("projections.runner").debug("projector stopped", exc_info=error)
            raise click.ClickException(f"projector stopped: {in_one_line(error)}") from None

    from ledger.store.migrate import PROJECTOR_ROLE

    # Reads the store, writes the views and the deliveries: it may not append, nor make a
    # token. A DATABASE_URL naming ledger_service (`ledger serve`'s own) is used as it is.
    if exit_now.asked:
        sys.exit(0)
    try:
        run_with_database(settings, run, server_settings=PROJECTOR_SETTINGS, role=PROJECTOR_ROLE)
    except Exception as error:
        if not supervised or isinstance(error, click.exceptions.Exit | click.Abort):
            raise
        # Under `ledger serve` its last line goes to the server's log in the log's format
        # (JSON lines when not on a terminal), not as a bare "Error: …" among them.
        said = error if isinstance(error, click.ClickException) else error_in_one_line(error)
        logging.getLogger("projections.runner").error("%s", said.format_message())
        sys.exit(1)
    if not supervised:
        logging.getLogger("ledger").info("stopped")


class ExitWhileStarting:
    """The projector's SIGTERM handler until its own is in place: asked to stop while still
    starting, nothing applied yet, so a clean exit (and a second SIGTERM must not turn it
    into -15 while the interpreter winds down). The ``SystemExit`` it raises can land in a
    callback that swallows it (an import's module-lock weakref callback printed "Traceback
    ... SystemExit: 0" and the projector started all the same): ``asked`` is looked at
    again before the projector starts and once its own handlers are in place.

    While the event loop runs, the exit is raised from a callback of the loop's own: raised
    where the signal landed, in a transport's callback (asyncpg's TLS upgrade, connecting),
    uvloop logged it as a fatal error with its traceback."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self, *_: object) -> None:
        import asyncio
        import signal

        self.asked = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            sys.exit(0)
        loop.call_soon_threadsafe(sys.exit, 0)


async def _say_a_projector_as_the_service(database: Database) -> None:
    """A warning when ``ledger project`` on its own connects as ``ledger_service`` (a
    deployment from before ``ledger_projector``): that role may append events and make
    tokens. `ledger serve`'s own projector shares the API's host and role, and says nothing."""
    from ledger.store.event_store import DATABASE_ERRORS
    from ledger.store.migrate import PROJECTOR_ROLE, SERVICE_ROLE

    try:
        role = await database.pool.fetchval("SELECT current_user")
    except DATABASE_ERRORS:
        return  # the projector's own start says so next
    if role == SERVICE_ROLE:
        logging.getLogger("ledger").warning(
            "projector: %s may append events and make tokens, which a projector never needs; "
            "connect it as %s (docs/production.md)",
            SERVICE_ROLE,
            PROJECTOR_ROLE,
        )

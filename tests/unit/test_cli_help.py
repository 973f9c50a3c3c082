"""``ledger … --help`` tells what the command reads from the environment."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version

import click
from click.testing import CliRunner

from api.cli import main


def commands(group: click.Group, path: str = "ledger") -> Iterator[tuple[str, click.Command]]:
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


def test_every_option_read_from_a_variable_names_it_in_its_help() -> None:
    unnamed = [
        f"{path} {option.opts[0]} ({option.envvar})"
        for path, command in commands(main)
        for option in command.params
        if isinstance(option, click.Option)
        and option.envvar
        and not option.show_envvar
        and str(option.envvar) not in (option.help or "")
    ]

    assert not unnamed


def test_every_option_says_what_it_does() -> None:
    """`--help` listed --scope, --status, --subject-prefix, --batch-size and the stand-in's
    --port with nothing beside them but a default."""
    silent = [
        f"{path} {option.opts[0]}"
        for path, command in commands(main)
        for option in command.params
        if isinstance(option, click.Option) and not option.hidden and not option.help
    ]

    assert not silent


def test_ledger_version_names_the_installed_release() -> None:
    """Which release a host runs: `ledger --version` was "No such option", "Did you mean
    '--verbose'?"."""
    shown = subprocess.run(
        [sys.executable, "-m", "api.cli", "--version"], capture_output=True, text=True, check=False
    )

    assert (shown.returncode, shown.stderr) == (0, "")
    assert shown.stdout == f"ledger (credit-ledger) {version('credit-ledger')}\n"


def test_audit_verify_help_tells_findings_from_could_not_verify() -> None:
    """Both exited 1: a monitor could not tell wrong books from an audit that never ran."""
    shown = subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", "verify", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert "1  findings" in shown
    assert "2  could not verify" in shown


def test_ledger_help_lists_the_exit_codes() -> None:
    """Nowhere said what 1, 2 or a Ctrl-C's ending meant."""
    shown = subprocess.run(
        [sys.executable, "-m", "api.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout

    codes = shown.split("Exit codes:")[1].split()
    assert {"0", "1", "2", "3", "130"} <= set(codes)


def test_ledger_help_names_shows_that_commands_help() -> None:
    """`ledger help` was click's "No such command 'help'" to a newcomer who typed it."""
    runner = CliRunner()

    assert runner.invoke(main, ["help"]).output == runner.invoke(main, ["--help"]).output
    asked = runner.invoke(main, ["help", "audit", "verify"])
    assert (asked.exit_code, asked.output) == (
        0,
        runner.invoke(main, ["audit", "verify", "--help"]).output,
    )


def test_ledger_help_of_a_command_it_lacks_says_where_it_looked() -> None:
    refused = CliRunner().invoke(main, ["help", "audit", "nope"], prog_name="ledger")

    assert refused.exit_code == 2
    assert refused.output.splitlines()[-1] == "Error: ledger audit has no command 'nope'"

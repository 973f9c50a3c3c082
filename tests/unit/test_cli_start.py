"""The ``ledger`` command starts without the web stack: every command pays for what its
module imports, and so does each process ``audit verify`` and ``projections rebuild``
spawn (they import the command again as their ``__main__``)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.support.cli import COMMAND_THEN_SAY_WHAT_IT_IMPORTED, exit_code_and_modules


def test_the_cli_module_imports_neither_litestar_nor_the_app() -> None:
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, api.cli; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "api.cli" in imported
    assert not [m for m in imported if m == "litestar" or m.startswith(("litestar.", "api.app"))]


_WHAT_HELP_NEEDS_NOT = (
    "asyncpg",
    "eventsourcing",
    "httpx",
    "ledger.domain.events",
    "ledger.service",
    "ledger.store",
    "prometheus_client",
    "stripe",
    "uvloop",
)
"""The database's driver, the events, the store, the service and the SDKs: ~0.25 s of CPU
that `ledger --help` paid before any of its lines (api/cli_*.py import them where used)."""


@pytest.mark.parametrize(
    ("arguments", "also_not"),
    [
        (["--help"], ("asyncio",)),
        (["audit", "--help"], ()),  # the group's callback has run: the log is set up
        (["grants", "list", "--help"], ()),
        (["stripe", "reconcile", "--help"], ()),
    ],
)
def test_help_imports_neither_the_database_nor_the_domain(
    arguments: list[str], also_not: tuple[str, ...]
) -> None:
    ran = subprocess.run(  # noqa: S603 (the test's own script)
        [sys.executable, "-c", COMMAND_THEN_SAY_WHAT_IT_IMPORTED, *arguments],
        capture_output=True,
        text=True,
        check=True,
    )
    code, imported = exit_code_and_modules(ran.stdout)

    assert code == "0", ran.stdout + ran.stderr
    assert "api.cli_audit" in imported
    heavy = (*_WHAT_HELP_NEEDS_NOT, *also_not)
    assert [m for m in imported if m in heavy or m.startswith(tuple(f"{h}." for h in heavy))] == []


def test_a_commands_start_up_checks_do_not_import_the_stripe_sdk() -> None:
    """Every command checks the variables (``settings_from_env``), STRIPE_TIMEOUT_SECONDS
    among them; only the commands that call Stripe should pay for the SDK (~0.3 s)."""
    checked = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from api.cli_support import settings_from_env; settings_from_env(); "
            "print('stripe' in sys.modules, 'httpx' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": "postgresql://x@127.0.0.1:1/ledger",
            "STRIPE_TIMEOUT_SECONDS": "7",
        },
    )
    assert checked.stdout.split() == ["False", "False"]


# A real SIGINT, sent by the process to itself while api.cli imports click (its imports
# take most of a command's start), or while a command runs.
_CTRL_C_WHILE_IMPORTING = """
import os, signal, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
from api.cli import main
print("imported")
sys.exit(main(["--help"], prog_name="ledger"))
"""

_CTRL_C_WHILE_RUNNING = """
import os, signal, sys
from api.cli import main

@main.command("interrupted")
def interrupted() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    while True:
        pass

sys.exit(main(["interrupted"], prog_name="ledger"))
"""


# A Ctrl-C while a class is made (in its descriptors' __set_name__, as a module imports):
# Python 3.11 wraps what __set_name__ raises in a RuntimeError.
_CTRL_C_IN_SET_NAME = """
import os, signal

class CtrlC:
    def __set_name__(self, owner, name):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # the signal's handler runs between these
            pass

def made() -> None:
    type("Made", (), {"field": CtrlC()})
"""

_CTRL_C_WRAPPED_WHILE_IMPORTING = (
    _CTRL_C_IN_SET_NAME
    + """
import sys

class MadeAsClickImports:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            made()
        return None

sys.meta_path.insert(0, MadeAsClickImports())
from api.cli import main
print("imported")
sys.exit(main(["--help"], prog_name="ledger"))
"""
)

_CTRL_C_WRAPPED_WHILE_RUNNING = (
    _CTRL_C_IN_SET_NAME
    + """
import sys
from api.cli import main
from api.cli_exits import exit_2_when_it_cannot_run

@main.command("interrupted")
def interrupted() -> None:
    made()

@main.command("interrupted-verifying")
def interrupted_verifying() -> None:
    with exit_2_when_it_cannot_run():  # as `audit verify`
        made()

sys.exit(main([sys.argv[1]], prog_name="ledger"))
"""
)


@pytest.mark.parametrize(
    ("script", "command"),
    [
        (_CTRL_C_WHILE_IMPORTING, ""),
        (_CTRL_C_WHILE_RUNNING, ""),
        (_CTRL_C_WRAPPED_WHILE_IMPORTING, ""),
        (_CTRL_C_WRAPPED_WHILE_RUNNING, "interrupted"),
        (_CTRL_C_WRAPPED_WHILE_RUNNING, "interrupted-verifying"),
    ],
    ids=[
        "while the CLI imports",
        "while a command runs",
        "wrapped while the CLI imports",
        "wrapped while a command runs",
        "wrapped while a command that exits 2 when it cannot run runs",
    ],
)
def test_ctrl_c_is_one_line_and_ends_the_process_by_sigint(script: str, command: str) -> None:
    """A Ctrl-C during the start printed a KeyboardInterrupt traceback of import machinery;
    during a command, click's "Aborted!" with exit 1. Both now say "Aborted!" and end by
    SIGINT, as Python ends on a Ctrl-C (130 in a shell, and a script running it stops).
    A Ctrl-C that reached the command inside another error (Python 3.11 wraps one raised
    in ``__set_name__``) was that error's traceback, or its line and exit 1 (2)."""
    ran = subprocess.run(  # noqa: S603 (the test's own script)
        [sys.executable, "-c", script, command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (ran.returncode, ran.stdout, ran.stderr) == (-signal.SIGINT, "", "\nAborted!\n")

"""The ``ledger`` command starts without the web stack: every command pays for what its
module imports, and so does each process ``audit verify`` and ``projections rebuild``
spawn (they import the command again as their ``__main__``)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest


def test_the_cli_module_imports_neither_litestar_nor_the_app() -> None:
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, api.cli; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "api.cli" in imported
    assert not [m for m in imported if m == "litestar" or m.startswith(("litestar.", "api.app"))]


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


@pytest.mark.parametrize(
    "script",
    [_CTRL_C_WHILE_IMPORTING, _CTRL_C_WHILE_RUNNING],
    ids=["while the CLI imports", "while a command runs"],
)
def test_ctrl_c_is_one_line_and_ends_the_process_by_sigint(script: str) -> None:
    """A Ctrl-C during the start printed a KeyboardInterrupt traceback of import machinery;
    during a command, click's "Aborted!" with exit 1. Both now say "Aborted!" and end by
    SIGINT, as Python ends on a Ctrl-C (130 in a shell, and a script running it stops)."""
    ran = subprocess.run(  # noqa: S603 (the test's own script)
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (ran.returncode, ran.stdout, ran.stderr) == (-signal.SIGINT, "", "\nAborted!\n")

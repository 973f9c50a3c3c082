"""The ``ledger`` command starts without the web stack: every command pays for what its
module imports, and so does each process ``audit verify`` and ``projections rebuild``
spawn (they import the command again as their ``__main__``)."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_module_imports_neither_litestar_nor_the_app() -> None:
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, api.cli; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "api.cli" in imported
    assert not [m for m in imported if m == "litestar" or m.startswith(("litestar.", "api.app"))]

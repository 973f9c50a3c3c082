"""The embedded PostgreSQL that does not start is one line saying where to read why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_an_embedded_server_that_does_not_start_names_its_log(tmp_path: Path) -> None:
    """The line said only "pg_ctl exited with 1", after the library's log lines, long ones
    when the server's log is long."""
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("18\n")  # a data folder with nothing else
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    failed = subprocess.run(
        [sys.executable, "-m", "api.cli", "accounts", "list"],
        env={**env, "LEDGER_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert failed.returncode == 1
    last = failed.stderr.splitlines()[-1]
    assert last == (
        f"Error: the embedded PostgreSQL in {tmp_path / 'pg'} did not start: pg_ctl exited "
        f"with 1 (its log says why: {tmp_path / 'pg' / 'log'})"
    )

"""The projector ``ledger serve`` starts says its last words in the server's log format."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def test_a_supervised_projector_that_cannot_start_says_why_in_a_json_log_line() -> None:
    """Its "Error: cannot connect …" came as a bare line among the server's JSON lines."""
    with socket.socket() as deaf:  # bound, never listening: the connection is refused
        deaf.bind(("127.0.0.1", 0))
        url = f"postgresql://nobody@127.0.0.1:{deaf.getsockname()[1]}/ledger"
        failed = subprocess.run(
            [sys.executable, "-m", "api.cli", "project", "--supervised"],
            env={**os.environ, "DATABASE_URL": url, "LEDGER_LOG_FORMAT": "json"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert failed.returncode == 1
    lines = [json.loads(line) for line in failed.stderr.splitlines() if line.strip()]
    [said] = [line for line in lines if line["level"] == "error"]
    assert said["logger"] == "projections.runner"
    assert said["message"].startswith(f"cannot connect to {url} (")
    assert said["message"].endswith("is PostgreSQL running there? (DATABASE_URL)")

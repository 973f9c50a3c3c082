"""A ``PROMETHEUS_MULTIPROC_DIR`` the process cannot write is one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("kind", ["missing", "a file"])
@pytest.mark.parametrize("command", [["--help"], ["accounts", "list"]])
def test_a_metrics_folder_that_is_not_one_is_said_in_one_line(
    tmp_path: Path, kind: str, command: list[str]
) -> None:
    """prometheus-client opens its files as the metrics' modules are imported: every command
    ended in its FileNotFoundError's traceback."""
    folder = tmp_path / "metrics"
    if kind == "a file":
        folder.write_text("")
    refused = subprocess.run(  # noqa: S603 (the arguments are this test's own)
        [sys.executable, "-m", "api.cli", *command],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 1
    assert refused.stderr == (
        f"Error: PROMETHEUS_MULTIPROC_DIR names {folder}, which is not a folder this process "
        "may write: make it, or unset the variable\n"
    )

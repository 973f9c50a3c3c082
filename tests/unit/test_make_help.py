"""``make`` alone (``make help``) lists the targets as a newcomer reads them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_help_shows_the_shells_dollar_and_one_column_of_descriptions() -> None:
    listed = subprocess.run(  # noqa: S603 (the arguments are this test's own)
        ["make", "--no-print-directory", "-C", str(ROOT)],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()

    assert "make run" in listed[1]
    assert "127.0.0.1:${PORT:-8000}" in listed[1]
    assert not [line for line in listed if "$$" in line]
    # Every description starts in the same column, test-cluster's and simulate's too.
    starts = {re.match(r"  make \S+ +", line).end() for line in listed}  # type: ignore[union-attr]
    assert len(starts) == 1, listed

"""The ``ledger`` command line, run as an operator runs it: a process of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def ledger(
    database_url: str, *args: str, seconds: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ledger ARGS`` against ``database_url`` (and ``env``); its output, never raising
    on failure."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds,
        check=False,
    )

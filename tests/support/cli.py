"""The ``ledger`` command line, run as an operator runs it: a process of its own."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time
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


COMMAND_THEN_SAY_WHAT_IT_IMPORTED = """
import sys
from api.cli import main
try:
    main(sys.argv[1:], prog_name="ledger")
except SystemExit as end:
    print(end.code, *sorted(sys.modules))
"""
"""A script (``python -c``) running ``ledger ARGUMENTS``; its last line is the exit code,
then every module the command imported (``exit_code_and_modules``)."""


def exit_code_and_modules(stdout: str) -> tuple[str, list[str]]:
    """What ``COMMAND_THEN_SAY_WHAT_IT_IMPORTED`` said last: the exit code, the modules."""
    code, *modules = stdout.splitlines()[-1].split()
    return code, modules


def run_on_a_terminal(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """``ledger ARGS`` against ``database_url`` (and ``env``) with a pseudo-terminal as
    stdout and stderr: its exit code and output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "api.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url, **(env or {})},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # closed with the process
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return process.wait(30), output.decode(errors="replace")


def imported(stderr: str, module: str) -> int:
    """How many processes imported ``module``, by their ``-X importtime`` lines."""
    return sum(line.rsplit("|", 1)[-1].strip() == module for line in stderr.splitlines())

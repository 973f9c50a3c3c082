"""py-spy on a server process while a load runs (``bench.run_all --profile DIR``).

``py-spy record --pid PID --rate 200 --format raw`` samples only that process (not its
children: the projector of ``ledger serve`` is not in it) and only threads that are not
idle. It pauses the process for each sample, so profiled loads are never the measured
ones: ``bench.run_all`` runs one extra load per kind of request for its profile.
Each profile is kept as ``DIR/<name>.txt`` (collapsed stacks, for flamegraph tools),
with its top functions in ``DIR/<name>-top.txt`` (``bench.profile_summary``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bench import profile_summary

RATE = 200


def py_spy() -> str:
    """The py-spy next to this Python (the bench extra installs it), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]' (make bench does)")
    return found


@contextlib.asynccontextmanager
async def profiled(folder: Path, name: str, pid: int, seconds: int) -> AsyncIterator[Path]:
    """py-spy on ``pid`` for ``seconds`` while the block runs; yields the raw file's path."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    raw = folder / f"{name}.txt"
    process = await asyncio.create_subprocess_exec(
        py_spy(), "record", "--pid", str(pid), "--duration", str(seconds),
        "--rate", str(RATE), "--format", "raw", "--output", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield raw
    finally:
        await process.wait()
        await asyncio.to_thread(_write_summary, raw, folder / f"{name}-top.txt")


def _write_summary(raw: Path, summary: Path) -> None:
    if raw.exists():
        summary.write_text(profile_summary.summarise(raw))
        print(f"profile: {raw}, top functions in {summary}", file=sys.stderr, flush=True)

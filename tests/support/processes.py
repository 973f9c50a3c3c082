"""Processes as /proc shows them, while the test watches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path


def _processes() -> Iterator[tuple[int, int, str]]:
    """Every process: its pid, its parent's and its command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        # Any process's: another program's may be in no UTF-8 (a test failed on one's 0xff).
        yield int(entry.name), parent, command.replace(b"\0", b" ").decode(errors="replace").strip()


def children_of(pid: int) -> dict[int, str]:
    """The children of ``pid``: their pids and command lines."""
    return {child: command for child, parent, command in _processes() if parent == pid}


def every_process() -> dict[int, str]:
    """Every process: its pid and command line."""
    return {pid: command for pid, _, command in _processes() if command}


def spawned_workers(parent: int) -> list[int]:
    """The processes ``parent`` started with multiprocessing's spawn (not its helpers)."""
    return [pid for pid, command in children_of(parent).items() if "spawn_main" in command]


def gone(pids: list[int], seconds: float = 10) -> bool:
    """Whether every one of ``pids`` has ended within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.05)
    return False

"""Processes as /proc shows them, while the test watches."""

from __future__ import annotations

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
        yield int(entry.name), parent, command.replace(b"\0", b" ").decode().strip()


def children_of(pid: int) -> dict[int, str]:
    """The children of ``pid``: their pids and command lines."""
    return {child: command for child, parent, command in _processes() if parent == pid}


def every_process() -> dict[int, str]:
    """Every process: its pid and command line."""
    return {pid: command for pid, _, command in _processes() if command}

"""Processes as /proc shows them: a process's children, while the test watches."""

from __future__ import annotations

from pathlib import Path


def children_of(pid: int) -> dict[int, str]:
    """The children of ``pid``: their pids and command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found[int(entry.name)] = command.replace(b"\0", b" ").decode().strip()
    return found

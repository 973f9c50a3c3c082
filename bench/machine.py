"""Facts about the machine and the server processes, for the report.

A server's stack is read from the process itself: the shared libraries mapped into it
(``/proc/<pid>/maps``, its children's too) say whether uvloop and httptools were
loaded, so a silent fall-back to asyncio and h11 shows in the table.
"""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path

import psutil

PACKAGES = ("litestar", "uvicorn", "uvloop", "httptools", "granian", "asyncpg", "msgspec")
_LIBRARIES = {
    "uvloop": "uvloop/loop.",
    "httptools": "httptools/parser/parser.",
    "granian": "_granian",
}


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def loaded_libraries(pid: int) -> set[str]:
    """Which of uvloop, httptools and granian's core are mapped into ``pid`` or its children."""
    try:
        parent = psutil.Process(pid)
        pids = [pid, *(child.pid for child in parent.children(recursive=True))]
    except psutil.NoSuchProcess:
        return set()
    found: set[str] = set()
    for each in pids:
        with contextlib.suppress(OSError):
            maps = Path(f"/proc/{each}/maps").read_text()
            found |= {name for name, marker in _LIBRARIES.items() if marker in maps}
    return found


def stack_of(pid: int, server: str) -> str:
    """The server, event loop and HTTP parser a running ``server`` process uses."""
    libraries = loaded_libraries(pid)
    loop = f"uvloop {version('uvloop')}" if "uvloop" in libraries else "asyncio loop"
    if server == "granian":
        return f"granian {version('granian')} (asgi, {loop})"
    parser = f"httptools {version('httptools')}" if "httptools" in libraries else "h11"
    return f"uvicorn {version('uvicorn')} + {loop} + {parser}"


def short_stack(stack: str) -> str:
    """``uvicorn+uvloop+httptools`` for a table cell."""
    words = stack.replace("(", " ").replace(")", " ").replace(",", " ").replace("+", " ").split()
    names = [
        w for w in words if w in ("uvicorn", "granian", "uvloop", "httptools", "h11", "asyncio")
    ]
    return "+".join(names)


def machine_line() -> str:
    """CPUs, memory, Python and the packages that set the HTTP stack's speed."""
    memory = psutil.virtual_memory().total / 2**30
    packages = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    return (
        f"{os.cpu_count()} CPUs (nproc), {memory:.0f} GiB, {platform.system()}"
        f" {platform.release()}, Python {platform.python_version()}; {packages}"
    )


def load_average() -> str:
    one, five, fifteen = psutil.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"

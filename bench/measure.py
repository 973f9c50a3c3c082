"""One measured load: the load generator's numbers and what the server spent on them.

``measured`` runs ``bench.load`` (a process of its own) against a server and records,
over the same window, the server's CPU time (psutil ``cpu_times()``, user + system):

* of the process that answers the requests: ``ledger serve`` itself (not its child, the
  projector) and the uvicorn baseline; granian's worker processes for the granian
  baseline (its parent only supervises);
* of the whole process tree, and of the whole machine (for the notes);
* the time the API process's threads were ready to run and waited for a core (the
  kernel's ``/proc/<pid>/task/<tid>/schedstat``, Linux only): whether a server that is
  not at 100 % of a core is short of work or of a core;

and PostgreSQL's committed transactions in the benchmark's database
(``pg_stat_database.xact_commit``), per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.service import Server


async def load(*args: str) -> dict[str, Any]:
    """Run ``python -m bench.load ARGS`` and return its JSON line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.load {args[0]} failed: {err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system CPU seconds of the processes so far (those gone count nothing)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def run_queue_seconds(processes: list[psutil.Process], proc: Path = Path("/proc")) -> float:
    """Seconds the processes' threads have waited, ready to run, for a core so far (the
    second field of each thread's ``schedstat``; 0 where the kernel does not give it)."""
    total_ns = 0
    for process in processes:
        for task in proc.glob(f"{process.pid}/task/*/schedstat"):
            try:
                total_ns += int(task.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
    return total_ns / 1e9


def _busy(times: Any) -> float:
    return float(sum(times) - times.idle - times.iowait)


def machine_busy_seconds() -> float:
    """CPU seconds every core has spent not idle (nor waiting on I/O) since boot."""
    return _busy(psutil.cpu_times())


@dataclass
class CpuWindow:
    """CPU seconds a server used (its API process(es) and its whole tree) and the machine's
    busy share, over the block. Processes are listed at the start (none are started during
    a load)."""

    server: Server
    api_seconds: float = 0.0
    api_wait_seconds: float = 0.0
    tree_seconds: float = 0.0
    wall: float = 0.0
    machine_percent: float = 0.0

    def _processes(self) -> tuple[list[psutil.Process], list[psutil.Process]]:
        try:
            parent = psutil.Process(self.server.pid)
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            return [], []
        api = children if self.server.api_pids_are_children else [parent]
        return api, [parent, *children]

    def __enter__(self) -> CpuWindow:
        self._api, self._tree = self._processes()
        self._started = time.perf_counter()
        self._api_start = cpu_seconds(self._api)
        self._api_wait_start = run_queue_seconds(self._api)
        self._tree_start = cpu_seconds(self._tree)
        self._machine_start = psutil.cpu_times()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self._started
        self.api_seconds = cpu_seconds(self._api) - self._api_start
        self.api_wait_seconds = run_queue_seconds(self._api) - self._api_wait_start
        self.tree_seconds = cpu_seconds(self._tree) - self._tree_start
        end = psutil.cpu_times()
        total = sum(end) - sum(self._machine_start)
        busy = _busy(end) - _busy(self._machine_start)
        self.machine_percent = 100 * busy / total * (os.cpu_count() or 1) if total else 0.0


async def transactions(pool: asyncpg.Pool) -> int:
    """Committed transactions in this database so far (statistics flush within ~1 s)."""
    await asyncio.sleep(1.1)
    return int(
        await pool.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    )


@dataclass
class Phase:
    """One measured load (or several rounds of it added up)."""

    result: dict[str, Any]
    api_cpu_seconds: float
    tree_cpu_seconds: float
    wall: float
    machine_cpu: float
    transactions_per_request: float = 0.0
    api_wait_seconds: float = 0.0
    """How long the API process's threads waited for a core (``run_queue_seconds``)."""

    @property
    def rate(self) -> float:
        return float(self.result["rate"])

    @property
    def requests(self) -> int:
        return int(self.result["requests"])

    def latency_ms(self, key: str) -> float:
        return float(self.result["latency_us"][key]) / 1000

    @property
    def server_cpu(self) -> float:
        """The API process's CPU, in % of one core, over the window."""
        return 100 * self.api_cpu_seconds / self.wall if self.wall else 0.0

    @property
    def server_wait(self) -> float:
        """The API process's wait for a core, in % of the window."""
        return 100 * self.api_wait_seconds / self.wall if self.wall else 0.0

    @property
    def tree_cpu(self) -> float:
        return 100 * self.tree_cpu_seconds / self.wall if self.wall else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """The API process's CPU time per request answered, in µs."""
        return 1e6 * self.api_cpu_seconds / self.requests if self.requests else float("nan")

    @property
    def failures(self) -> int:
        return int(self.result["non_2xx"] + self.result["socket_errors"])


def _merged_result(phases: list[Phase]) -> dict[str, Any]:
    requests = sum(p.result["requests"] for p in phases)
    duration = sum(p.result["duration_us"] for p in phases)
    statuses: dict[str, int] = {}
    for p in phases:
        for status, count in p.result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "requests": requests,
        "duration_us": duration,
        "rate": requests / (duration / 1e6) if duration else 0.0,
        "latency_us": {
            key: statistics.median(p.result["latency_us"][key] for p in phases)
            for key in ("p50", "p90", "p99", "max", "mean")
        },
        "statuses": statuses,
        "non_2xx": sum(p.result["non_2xx"] for p in phases),
        "socket_errors": sum(p.result["socket_errors"] for p in phases),
        "wraps": sum(p.result.get("wraps", 0) for p in phases),
    }


def combine(phases: list[Phase]) -> Phase:
    """Rounds of one load, added up (latency: the median of the rounds' percentiles)."""
    return Phase(
        _merged_result(phases),
        sum(p.api_cpu_seconds for p in phases),
        sum(p.tree_cpu_seconds for p in phases),
        sum(p.wall for p in phases),
        statistics.fmean(p.machine_cpu for p in phases),
        statistics.fmean(p.transactions_per_request for p in phases),
        sum(p.api_wait_seconds for p in phases),
    )


async def measured(
    server: Server,
    pool: asyncpg.Pool,
    *args: str,
    before_load: Callable[[], None] | None = None,
    after_load: Callable[[], Awaitable[None]] | None = None,
    count_transactions: bool = True,
) -> Phase:
    """One load run; ``after_load`` runs before the transactions are counted again.

    Counting waits 1.1 s before and after (for the statistics to be flushed): loads whose
    transactions the report does not give skip it with ``count_transactions=False``.
    """
    before = await transactions(pool) if count_transactions else 0
    if before_load is not None:
        before_load()
    with CpuWindow(server) as cpu:
        result = await load(*args)
    if after_load is not None:
        await after_load()
    after = await transactions(pool) if count_transactions else 0
    return Phase(
        result,
        cpu.api_seconds,
        cpu.tree_seconds,
        cpu.wall,
        cpu.machine_percent,
        (after - before) / result["requests"] if result["requests"] else 0.0,
        cpu.api_wait_seconds,
    )

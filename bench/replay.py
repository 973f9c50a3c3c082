"""Replaying the whole store: ``ledger audit verify`` and ``ledger projections rebuild``
against a raw asyncpg read of the same rows.

* raw (the baseline): ``SELECT originator_id, originator_version, topic, state,
  notification_id, recorded_at, hash FROM stored_events ORDER BY notification_id``
  through a server-side cursor (prefetch 5,000, as the audit uses), in one read-only
  REPEATABLE READ transaction, rows counted and dropped;
* ``ledger audit verify --json`` as a subprocess: its report's ``events_per_second``
  (its own timer: the replay and the checks of the views);
* ``ledger projections rebuild`` as a subprocess: events in the store divided by the
  command's wall time (all three views, one after the other, each reads every event);
  each view's share is timed from when the command prints ``rebuilt <view>``.
  Rebuilding is one round trip or two per event here, so 1M events take longer than
  ``make bench`` can wait: ``--rebuild-seconds S`` instead runs
  ``ledger projections rebuild VIEW`` for each view for at most S seconds, takes its
  rate from how far its ``<table>__rebuild`` got, and adds the views up as the full
  command runs them: 1 / (sum of 1/rate).

    python -m bench.replay --database-url URL [--rebuild-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.service import ledger_command, service_env

RAW_QUERY = """SELECT originator_id, originator_version, topic, state, notification_id,
                      recorded_at, hash
               FROM stored_events ORDER BY notification_id"""
PREFETCH = 5000


@dataclass
class Timed:
    events: int
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def raw_fetch(url: str) -> Timed:
    """Every row of stored_events in order through a cursor; nothing done with them."""
    connection = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        count = 0
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            async for _ in connection.cursor(RAW_QUERY, prefetch=PREFETCH):
                count += 1
        return Timed(count, time.perf_counter() - started)
    finally:
        await connection.close()


async def audit_verify(url: str, data_dir: Path) -> Timed:
    """``ledger audit verify --json``; its own events/s, the wall time and the findings."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *ledger_command(),
        "audit",
        "verify",
        "--json",
        env=service_env(url, data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    wall = time.perf_counter() - started
    try:
        report = json.loads(out.decode().strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(
            f"ledger audit verify printed no report: {err.decode()[-2000:]}"
        ) from None
    return Timed(
        report["events"],
        report["seconds"],
        {
            "wall_seconds": wall,
            "events_per_second": report["events_per_second"],
            "findings": len(report["findings"]),
            "first_findings": report["findings"][:3],
            "exit_code": process.returncode,
            "accounts": report["accounts"],
            "checkout_sessions": report["checkout_sessions"],
        },
    )


async def projections_rebuild(url: str, data_dir: Path, events: int) -> Timed:
    """``ledger projections rebuild`` (every view) to the end; each view timed by its line."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *ledger_command(),
        "projections",
        "rebuild",
        env=service_env(url, data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    views: dict[str, float] = {}
    last = started
    async for raw in process.stdout:
        line = raw.decode().strip()
        if line.startswith("rebuilt "):
            now = time.perf_counter()
            views[line.split()[1]] = events / (now - last)
            last = now
    await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"ledger projections rebuild failed ({process.returncode})")
    return Timed(events, time.perf_counter() - started, {"views": views, "complete": True})


async def _rebuilt_position(connection: asyncpg.Connection, table: str) -> int | None:
    try:
        value = await connection.fetchval(f"SELECT max(position) FROM {table}__rebuild")
    except asyncpg.UndefinedTableError:
        return None
    return int(value or 0)


async def rebuild_view_rate(
    url: str, data_dir: Path, view: str, table: str, events: int, limit: float
) -> tuple[float, bool]:
    """``ledger projections rebuild VIEW``'s events/s, stopped after ``limit`` seconds.

    The command rebuilds into ``<table>__rebuild`` one committed batch at a time, so
    the highest position in that table is how far it has got. The rate is measured
    between the first batch seen and the last (the process's start-up left out); a
    view that finishes within ``limit`` counts all ``events`` over its whole run.
    Returns (events/s, finished).
    """
    connection = await asyncpg.connect(url)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *ledger_command(),
        "projections",
        "rebuild",
        view,
        env=service_env(url, data_dir),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    try:
        while process.returncode is None and time.perf_counter() - started < limit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.5)
            if process.returncode is not None:
                break
            position = await _rebuilt_position(connection, table)
            if position:
                now = (time.perf_counter(), position)
                first = first or now
                last = now
        if process.returncode is not None:
            if process.returncode != 0:
                raise RuntimeError(f"ledger projections rebuild {view} failed")
            return events / (time.perf_counter() - started), True
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        if first is None or last is None or last[0] <= first[0]:
            raise RuntimeError(f"ledger projections rebuild {view} made no progress in {limit} s")
        return (last[1] - first[1]) / (last[0] - first[0]), False
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}__rebuild")
        await connection.close()


async def projections_rebuild_sampled(url: str, data_dir: Path, events: int, limit: float) -> Timed:
    """Each view's rebuild rate, time-boxed; together as ``ledger projections rebuild`` runs
    them (one after the other): 1 / (sum of 1/rate)."""
    from projections.runner import all_projections

    views: dict[str, float] = {}
    finished = True
    for projection in all_projections():
        rate, done = await rebuild_view_rate(
            url, data_dir, projection.name, projection.table, events, limit
        )
        views[projection.name] = rate
        finished = finished and done
    seconds = sum(events / rate for rate in views.values())
    return Timed(events, seconds, {"views": views, "complete": finished, "limit": limit})


async def vacuum_analyze(url: str) -> float:
    """VACUUM ANALYZE the database (after bulk loads), so plans and visibility are settled."""
    connection = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE)")
        return time.perf_counter() - started
    finally:
        await connection.close()


async def run(url: str, data_dir: Path, rebuild_limit: float | None) -> dict[str, Timed]:
    """Raw read, rebuild (to the end, or each view for ``rebuild_limit`` s), verify, raw read."""
    raw_before = await raw_fetch(url)
    if rebuild_limit is None:
        rebuild = await projections_rebuild(url, data_dir, raw_before.events)
    else:
        rebuild = await projections_rebuild_sampled(url, data_dir, raw_before.events, rebuild_limit)
    verify = await audit_verify(url, data_dir)
    raw_after = await raw_fetch(url)
    raw = max(raw_before, raw_after, key=lambda t: t.rate)
    return {"raw": raw, "verify": verify, "rebuild": rebuild}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay",
        description="Time a raw cursor read of stored_events, `ledger projections rebuild` and"
        " `ledger audit verify` on an existing database (the rebuild replaces its views).",
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument(
        "--rebuild-seconds",
        type=float,
        help="time-box each view's rebuild to this many seconds and measure its rate"
        " (default: rebuild every view to the end)",
    )
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ledger-bench-replay-") as folder:
        results = asyncio.run(run(args.database_url, Path(folder), args.rebuild_seconds))
    for name, timed in results.items():
        print(
            f"{name:>8}: {timed.events:,} events in {timed.seconds:.1f} s, {timed.rate:,.0f}/s"
            f" {timed.detail or ''}",
            file=sys.stdout,
        )


if __name__ == "__main__":
    main()

"""Replaying the whole store: ``ledger audit verify`` and ``ledger projections rebuild``
against a raw asyncpg read of the same rows.

* raw (the baseline): ``SELECT originator_id, originator_version, topic, state,
  notification_id, recorded_at, hash FROM stored_events ORDER BY notification_id``
  through a server-side cursor (prefetch 5,000, as the audit uses), in one read-only
  REPEATABLE READ transaction, rows counted and dropped;
* ``ledger audit verify --json`` as a subprocess: its report's ``events_per_second``
  (its own timer: the replay and the checks of the views);
* ``ledger projections rebuild`` as a subprocess: events in the store divided by the
  command's wall time. The command rebuilds every view in one pass over the events, with
  its default ``--jobs`` (one process per 150,000 events, at most one per CPU, each folding
  its share of the streams).
  ``--rebuild-seconds S`` stops it after S seconds and takes its rate from how far its
  tables got.

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
    """``ledger audit verify --json`` (its default ``--jobs``: one process per 150,000 events,
    at most one per CPU); its own events/s, the wall time and the findings."""
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


async def start_rebuild(url: str, data_dir: Path) -> asyncio.subprocess.Process:
    """``ledger projections rebuild`` (every view, one pass, its default ``--jobs``) as a
    process of its own."""
    return await asyncio.create_subprocess_exec(
        *ledger_command(),
        "projections",
        "rebuild",
        env=service_env(url, data_dir),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def projections_rebuild(url: str, data_dir: Path, events: int) -> Timed:
    """``ledger projections rebuild`` (every view, in one pass over the events) to the end."""
    started = time.perf_counter()
    process = await start_rebuild(url, data_dir)
    await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"ledger projections rebuild failed ({process.returncode})")
    return Timed(events, time.perf_counter() - started, {"complete": True, "views": _views()})


def _views() -> list[str]:
    from projections.runner import all_projections

    return [p.name for p in all_projections()]


# Every event makes a statement line, so this table's highest position is how far
# the rebuild has got (its processes, one per share of the streams, go through the
# positions side by side).
PROGRESS_TABLE = "statement_lines"


async def _rebuilt_position(connection: asyncpg.Connection) -> int | None:
    try:
        value = await connection.fetchval(f"SELECT max(position) FROM {PROGRESS_TABLE}__rebuild")
    except asyncpg.UndefinedTableError:
        return None
    return int(value or 0)


async def projections_rebuild_sampled(url: str, data_dir: Path, events: int, limit: float) -> Timed:
    """``ledger projections rebuild``'s events/s (all views, one pass), stopped after ``limit`` s.

    The command rebuilds into ``<table>__rebuild`` one committed batch at a time, so
    the highest position in the statement's table is how far it has got. The rate is
    measured between the first batch seen and the last (the process's start-up left
    out); a rebuild that finishes within ``limit`` counts all ``events`` over its run.
    """
    connection = await asyncpg.connect(url)
    started = time.perf_counter()
    process = await start_rebuild(url, data_dir)
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    detail: dict[str, Any] = {"views": _views(), "limit": limit}
    try:
        while process.returncode is None and time.perf_counter() - started < limit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.5)
            if process.returncode is not None:
                break
            position = await _rebuilt_position(connection)
            if position:
                now = (time.perf_counter(), position)
                first = first or now
                last = now
        if process.returncode is not None:
            if process.returncode != 0:
                raise RuntimeError("ledger projections rebuild failed")
            return Timed(events, time.perf_counter() - started, {**detail, "complete": True})
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        if first is None or last is None or last[0] <= first[0]:
            raise RuntimeError(f"ledger projections rebuild made no progress in {limit} s")
        rate = (last[1] - first[1]) / (last[0] - first[0])
        return Timed(events, events / rate, {**detail, "complete": False})
    finally:
        from projections.runner import all_projections

        for projection in all_projections():
            await connection.execute(f"DROP TABLE IF EXISTS {projection.table}__rebuild")
        await connection.close()


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

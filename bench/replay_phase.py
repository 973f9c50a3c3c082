"""The database-only benchmarks of one configuration: appends, then replaying a big store.

1. ``bench.append_rate`` on a database of its own: plain inserts, the table lock and
   ``append()`` at 1, 8 and 32 clients, interleaved;
2. on another database, N ledger events made by the domain's aggregates
   (``bench.generate``), then a raw cursor read, ``ledger projections rebuild`` and
   ``ledger audit verify`` (``bench.replay``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import asyncpg

from bench import append_rate, generate, replay
from bench.options import Options
from bench.postgres import bench_database, server_facts
from bench.results import Results
from ledger.store.migrate import set_up


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def prepare(url: str, results: Results) -> None:
    """Set the database up (roles, functions, migrations) and read the server's settings."""
    connection = await asyncpg.connect(url)
    try:
        await set_up(connection)
        results.server = await server_facts(connection)
    finally:
        await connection.close()
    if results.server.synchronous_commit != "on":
        results.notes.append("WARNING: synchronous_commit is not on: commits are not durable")


async def appends(options: Options, results: Results) -> None:
    """append_rate at each client count, on a database of its own."""
    async with bench_database(results.configuration.server_url) as url:
        await append_rate.prepare_schema(url)
        progress(f"append rate at {options.append_clients} clients")
        results.appends = await append_rate.measure_appends(
            url, options.append_clients, options.append_seconds, rounds=2
        )


async def replays(data_dir: Path, options: Options, results: Results) -> None:
    """Generate N events, then the raw read, the rebuild and the audit."""
    async with bench_database(results.configuration.server_url) as url:
        await prepare(url, results)
        progress(f"generating {options.events:,} ledger events")
        results.generated = await generate.generate(url, options.events)
        progress(f"generated {results.generated.events:,} in {results.generated.seconds:.1f} s")
        results.setup_seconds["vacuum after load"] = await replay.vacuum_analyze(url)
        progress("raw read, ledger projections rebuild, ledger audit verify")
        results.replay = await replay.run(url, data_dir, options.rebuild_seconds)
    progress(
        "replayed: "
        + ", ".join(f"{k} {t.rate:,.0f}/s in {t.seconds:.1f} s" for k, t in results.replay.items())
    )
    verify = results.replay["verify"]
    if verify.detail["findings"] or verify.detail["exit_code"]:
        results.notes.append(
            f"WARNING: ledger audit verify found {verify.detail['findings']} problem(s):"
            f" {verify.detail['first_findings']}"
        )

"""Every benchmark of the performance issue, each against a baseline from the same run.

For each PostgreSQL configuration (``bench.postgres``: the embedded server over a Unix
socket, then the machine's server over TCP on 127.0.0.1:5432 when one answers), on
databases ``ledger_bench_<random>`` of its own, dropped at the end:

1. ``bench.replay_phase``: append rates (plain inserts, the table lock, ``append()``),
   then N real ledger events replayed by a raw read, ``ledger projections rebuild`` and
   ``ledger audit verify``;
2. ``bench.http_phase``: ``ledger serve`` against the bare baseline app on uvicorn +
   uvloop + httptools and on granian, under wrk, interleaved; with ``--profile``, py-spy
   profiles for the CPU budget's stages (on the first configuration; ``--profile-each``).

Then one report (``bench.report``): a table with every row for every configuration,
the notes, the append detail and the CPU budget per request. ``--quick`` shrinks
everything for a smoke run.

    python -m bench.run_all [--quick] [--postgres embedded,tcp] [--profile DIR]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import machine, postgres
from bench.http_phase import http_phase
from bench.options import Options, parse_args
from bench.replay_phase import appends, replays
from bench.report import report
from bench.results import Results


async def benchmark(
    options: Options, configuration: postgres.Configuration, profiled: bool
) -> Results:
    """Every measurement on one PostgreSQL configuration."""
    results = Results(configuration, load_average=machine.load_average(), profiled=profiled)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-run-") as folder:
        data_dir, logs = Path(folder) / "data", Path(folder)
        await appends(options, results)
        await replays(data_dir, options, results)
        await http_phase(data_dir, logs, options, results)
    results.wall = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench does it as root)")
    started = time.perf_counter()
    runs: list[Results] = []
    skipped: list[str] = []
    for key in options.configurations:
        with postgres.configuration(key, options.database_url) as configuration:
            if configuration is None:
                skipped.append(f"{key}: no PostgreSQL answered at {postgres.TCP_URL}.")
                continue
            print(f"== PostgreSQL: {configuration.source}", file=sys.stderr, flush=True)
            profiled = options.profile is not None and (options.profile_each or not runs)
            runs.append(asyncio.run(benchmark(options, configuration, profiled)))
    if not runs:
        raise SystemExit("no PostgreSQL configuration could be measured")
    print(report(runs, options, skipped), flush=True)
    print(f"Whole run: {(time.perf_counter() - started) / 60:.1f} min.", flush=True)


if __name__ == "__main__":
    main()

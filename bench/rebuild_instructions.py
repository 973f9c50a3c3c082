"""Instructions ``ledger projections rebuild --jobs 1`` costs its process an event, counted
by callgrind (not timed).

The driver runs ``rebuild_all`` of every view at ``--jobs 1`` on a database that already
holds events (``bench.generate``'s: ``python -m bench.generate --database-url URL
--events 200000``), as the command runs it (uvloop, ``settle_after_start_up`` with
``BATCHES_YOUNG``, an owner connection). Under callgrind only ``rebuild_all`` is counted:
the driver calls ``zlib.adler32`` just before it and ``zlib.crc32`` just after
(``--zero-before=adler32 --dump-before=crc32``), so start-up and imports fall outside the
dump. The count is the process's (asyncpg's and msgspec's work included, PostgreSQL's
not: it is another process) divided by the events rebuilt. Each run swaps fresh tables
in, so the database's views are rebuilt each time and ``--digest`` checks them.

    python -m bench.rebuild_instructions --database-url URL --runs 3
    python -m bench.rebuild_instructions --database-url URL --runs 1 --keep /tmp/cg --split
    python -m bench.rebuild_instructions --database-url URL --digest   # md5 of each view
    python -m bench.rebuild_instructions --database-url URL --no-valgrind --cprofile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import shutil
import sys
import zlib
from pathlib import Path

from bench.callgrind import counted_run, counted_runs, stored_events


async def _rebuild(url: str, jobs: int, profile_to: Path | None) -> int:
    from api.database import owner_connection
    from ledger.heap import BATCHES_YOUNG, settle_after_start_up
    from projections.rebuild import rebuild_all
    from projections.runner import all_projections

    settle_after_start_up(young=BATCHES_YOUNG)  # as the command does
    async with owner_connection(url) as connection:
        profiler = cProfile.Profile() if profile_to else None
        zlib.adler32(b"")  # callgrind: --zero-before=adler32
        if profiler is not None:
            profiler.enable()
        position = await rebuild_all(
            connection, all_projections(), lambda n, p: None, jobs=jobs, database_url=url
        )
        if profiler is not None and profile_to is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)
        zlib.crc32(b"")  # callgrind: --dump-before=crc32
    return position


async def digests(url: str) -> dict[str, str]:
    """Each view's table (and the deliveries) as one md5 of its rows in text order."""
    import asyncpg

    from bench.rebuild_compare import VIEW_TABLES

    connection = await asyncpg.connect(url)
    try:
        return {
            table: await connection.fetchval(
                f"SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|'"
                f" ORDER BY t::text), '')) FROM {table} t"
            )
            for table in VIEW_TABLES
        }
    finally:
        await connection.close()


def _one_run(args: argparse.Namespace, run: int, out_dir: Path) -> int | None:
    command = [
        sys.executable, "-m", "bench.rebuild_instructions", "--drive",
        "--database-url", args.database_url, "--jobs", str(args.jobs),
    ]  # fmt: skip
    if args.cprofile:
        command += ["--profile-to", str(out_dir / f"cprofile.run{run}")]
    return counted_run(
        command, out_dir, run, valgrind=args.valgrind, cprofile=args.cprofile,
        per=args.events, unit="an event", split=args.split,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rebuild_instructions",
        description="Instructions a rebuild of every view costs its process an event "
        "(callgrind), on a database of generated events (see the module's docstring).",
    )
    parser.add_argument("--database-url", required=True, help="a database with events")
    parser.add_argument("--runs", type=int, default=3, help="runs (each its own process)")
    parser.add_argument("--jobs", type=int, default=1, help="the rebuild's --jobs")
    parser.add_argument("--keep", type=Path, help="keep the callgrind dumps in this folder")
    parser.add_argument(
        "--split", action="store_true", help="each shared object's self instructions an event"
    )
    parser.add_argument(
        "--digest", action="store_true", help="after the runs, md5 of each view's rows"
    )
    parser.add_argument(
        "--cprofile", action="store_true", help="with --no-valgrind: cProfile the rebuild"
    )
    parser.add_argument(
        "--no-valgrind", dest="valgrind", action="store_false", help="run the driver alone"
    )
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        from ledger import event_loop

        print(event_loop.run(_rebuild(args.database_url, args.jobs, args.profile_to)))
        return
    if args.valgrind and shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    args.events = asyncio.run(stored_events(args.database_url))
    counted_runs(
        args.runs, lambda run, out_dir: _one_run(args, run, out_dir), per=args.events,
        what="an event", keep=args.keep, prefix="rebuild-instructions-",
    )  # fmt: skip
    if args.digest:
        for table, value in asyncio.run(digests(args.database_url)).items():
            print(f"  {table}: {value}")


if __name__ == "__main__":
    main()

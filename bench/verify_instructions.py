"""Instructions ``ledger audit verify --jobs 1`` costs its process an event, counted by
callgrind (not timed).

The driver runs ``verify(pool, jobs=1)`` on a database that already holds events and views
(``python -m bench.generate --database-url URL --events 30000``, then ``ledger projections
rebuild``, so every view is at the last event and every statement line is packed and
compared), as the command runs it (uvloop, ``settle_after_start_up`` with
``BATCHES_YOUNG``). Under callgrind only ``verify`` is counted: the driver calls
``zlib.adler32`` just before it and ``zlib.crc32`` just after (``--zero-before=adler32
--dump-before=crc32``). The count is the process's (asyncpg's and msgspec's work
included, PostgreSQL's not) divided by the events replayed; the run fails if the audit
finds anything.

    python -m bench.verify_instructions --database-url URL --runs 2
    python -m bench.verify_instructions --database-url URL --runs 1 --keep /tmp/cg --split
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import zlib
from pathlib import Path

from bench.callgrind import counted_run, counted_runs, stored_events


async def _verify(url: str) -> int:
    import asyncpg

    from audit.verify import verify
    from ledger.heap import BATCHES_YOUNG, settle_after_start_up

    settle_after_start_up(young=BATCHES_YOUNG)  # as the command does
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        zlib.adler32(b"")  # callgrind: --zero-before=adler32
        report = await verify(pool, jobs=1)
        zlib.crc32(b"")  # callgrind: --dump-before=crc32
    finally:
        await pool.close()
    if not report.ok:
        raise SystemExit(f"the audit found {len(report.findings)}: {report.findings[:3]}")
    return report.events


def _one_run(args: argparse.Namespace, run: int, out_dir: Path) -> int | None:
    command = [
        sys.executable, "-m", "bench.verify_instructions", "--drive",
        "--database-url", args.database_url,
    ]  # fmt: skip
    return counted_run(
        command, out_dir, run, valgrind=True, cprofile=False,
        per=args.events, unit="an event", split=args.split,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.verify_instructions",
        description="Instructions an audit verify at --jobs 1 costs its process an event "
        "(callgrind), on a database of generated events (see the module's docstring).",
    )
    parser.add_argument("--database-url", required=True, help="a database with events")
    parser.add_argument("--runs", type=int, default=3, help="runs (each its own process)")
    parser.add_argument("--keep", type=Path, help="keep the callgrind dumps in this folder")
    parser.add_argument(
        "--split", action="store_true", help="each shared object's self instructions an event"
    )
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        from ledger import event_loop

        print(event_loop.run(_verify(args.database_url)))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    args.events = asyncio.run(stored_events(args.database_url))
    counted_runs(
        args.runs, lambda run, out_dir: _one_run(args, run, out_dir), per=args.events,
        what="an event", keep=args.keep, prefix="verify-instructions-",
    )  # fmt: skip


if __name__ == "__main__":
    main()

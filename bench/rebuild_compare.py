"""Time ``rebuild_all`` of two checkouts of the code against a raw read, on the same events.

Makes a fresh database with N generated events (``bench.generate``), or takes an existing
one, then alternates, for each round: the raw cursor read (``bench.replay.raw_fetch``),
then each variant's rebuild of every view in a process of its own (the variant's code
first on its ``PYTHONPATH``), timed inside that process (start-up left out). After each
rebuild the views' rows are digested, so the variants are also checked to leave the
same rows.

    python -m bench.rebuild_compare --server-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --events 200000 --variant before=/tmp/base --variant after=.:jobs=2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
from pathlib import Path

import asyncpg

from bench import generate, replay
from bench.postgres import bench_database, set_up_ledger
from bench.variants import named_checkout, runs_in
from projections.runner import all_projections

VIEW_TABLES = (*(p.table for p in all_projections()), "webhook_deliveries")
"""Every view's table, and the outbox the notifications view fills."""

RUNNER = """
import asyncio, json, sys, time
from api.database import owner_connection
from projections.rebuild import rebuild_all
from projections.runner import all_projections

async def main(url, jobs):
    async with owner_connection(url) as connection:
        options = {} if jobs is None else {"jobs": jobs, "database_url": url}
        started = time.perf_counter()
        position = await rebuild_all(connection, all_projections(), lambda n, p: None, **options)
        print(json.dumps({"seconds": time.perf_counter() - started, "position": position}))

asyncio.run(main(sys.argv[1], None if sys.argv[2] == "-" else int(sys.argv[2])))
"""


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def run_variant(url: str, code: Path, jobs: int | None) -> tuple[float, float]:
    """Seconds the variant's ``rebuild_all`` took, in a process of its own, and the CPU
    seconds of that process and its workers (start-up included)."""
    cpu_before = children_cpu()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUNNER,
        url,
        "-" if jobs is None else str(jobs),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **runs_in(code),
    )
    out, err = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"rebuild of {code} failed: {err.decode()[-3000:]}")
    seconds = float(json.loads(out.decode().splitlines()[-1])["seconds"])
    return seconds, children_cpu() - cpu_before


async def digest(url: str) -> str:
    """One md5 over every view row, in a stable order."""
    connection = await asyncpg.connect(url)
    try:
        parts = []
        for table in VIEW_TABLES:
            value = await connection.fetchval(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                f" FROM {table} t"
            )
            parts.append(f"{table}:{value}")
        return " ".join(parts)
    finally:
        await connection.close()


def parse_variant(text: str) -> tuple[str, Path, int | None]:
    """``name=path`` or ``name=path:jobs=N``."""
    checkout, _, option = text.partition(":")
    name, code = named_checkout(checkout)
    jobs = int(option.removeprefix("jobs=")) if option else None
    return name, code, jobs


async def compare(url: str, variants: list[tuple[str, Path, int | None]], rounds: int) -> None:
    digests: dict[str, str] = {}
    for round_number in range(1, rounds + 1):
        raw = await replay.raw_fetch(url)
        print(
            f"round {round_number}: raw read {raw.events:,} events, {raw.rate:,.0f}/s", flush=True
        )
        for name, code, jobs in variants:
            seconds, cpu = await run_variant(url, code, jobs)
            rate = raw.events / seconds
            digests.setdefault(name, await digest(url))
            print(
                f"round {round_number}: {name:>10} {seconds:6.2f} s, {rate:,.0f} events/s,"
                f" {rate / raw.rate:.2f}x raw; Python CPU {cpu:.2f} s",
                flush=True,
            )
    if len(set(digests.values())) > 1:
        for name, value in digests.items():
            print(f"DIFFERENT VIEWS {name}: {value}")
    else:
        print("every variant left the same view rows")


async def main_async(args: argparse.Namespace) -> None:
    variants = [parse_variant(v) for v in args.variant]
    if args.database_url:
        await compare(args.database_url, variants, args.rounds)
        return
    async with bench_database(args.server_url) as url:
        await set_up_ledger(url)
        made = await generate.generate(url, args.events)
        print(f"generated {made.events:,} events in {made.seconds:.1f} s", flush=True)
        await replay.vacuum_analyze(url)
        await compare(url, variants, args.rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild_compare", description=__doc__)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database-url", help="an existing database with events (kept)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--variant", action="append", required=True, help="name=code_path[:jobs=N], repeatable"
    )
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

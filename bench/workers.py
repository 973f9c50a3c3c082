"""``ledger serve --workers 1`` against ``--workers 2`` on this machine, in the same run.

On one fresh database: the Stripe stand-in, one projector (``ledger project``), two
``ledger serve --no-projector`` servers (one API process; two API processes on one port)
and the bare baseline app (uvicorn + uvloop + httptools), each a process of its own;
1,000 accounts and 4 ``credits`` tokens. Then rounds of: bare INSERT, spends on one
worker, spends on two; then rounds of: bare JSON, ``GET /v1/credits`` on one worker, on
two. The servers take turns (only one is loaded at a time), so each load has the machine
the others leave; the order within a round turns with every round.

``python -m bench.workers [--database-url URL]`` prints a markdown table: requests/s,
p99 and CPU per request (the server's whole process tree) for each, and the ratios to
the bare baseline and to one worker. The default database server is the machine's
PostgreSQL over TCP (``bench.postgres``), the configuration ``docs/scaling.md`` quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from bench import service
from bench.measure import Phase, combine, load, measured
from bench.postgres import TCP_URL, bench_database
from bench.sampling import wait_for_projector
from ledger.store.migrate import set_up

ACCOUNT = "acct_bench_{:04d}"
CREDITS_TOKENS = 4
WORKER_COUNTS = (1, 2)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def projector(database_url: str, data_dir: Path, logs: Path) -> AsyncIterator[None]:
    """``ledger project`` in a process of its own, until the block ends."""
    with (logs / "ledger-project.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *service.ledger_command(),
            "project",
            env=service.service_env(database_url, data_dir),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def loads(url: str, token: str, credit_tokens: list[str], accounts: int) -> dict[str, list[str]]:
    """``bench.load`` arguments (without the duration) of the spend and read loads on ``url``."""
    readers = [arg for t in credit_tokens for arg in ("--token", t)]
    return {
        "spend": ["post", "--url", url, "--path", "/v1/accounts/acct_bench_%04d/spend",
                  "--accounts", str(accounts), "--token", token],
        "credits": ["get", "--url", url, "--path", "/v1/credits", *readers],
    }  # fmt: skip


async def run(database_url: str, seconds: int, rounds: int, accounts: int) -> str:
    """Set up, measure, and return the markdown report."""
    with tempfile.TemporaryDirectory(prefix="ledger-bench-workers-") as folder:
        data_dir, logs = Path(folder) / "data", Path(folder)
        async with bench_database(database_url) as url:
            connection = await asyncpg.connect(url)
            try:
                await set_up(connection)  # roles, functions, migrations, as `ledger db setup`
            finally:
                await connection.close()
            async with (
                service.stripe_standin(logs) as standin,
                projector(url, data_dir, logs),
                service.ledger_service(
                    url, standin.url, data_dir, logs, "--no-projector", "--workers", "1",
                    name="ledger serve 1 worker",
                ) as one,
                service.ledger_service(
                    url, standin.url, data_dir, logs, "--no-projector", "--workers", "2",
                    name="ledger serve 2 workers",
                ) as two,
                service.baseline_app(url, logs, "uvicorn") as bare,
            ):  # fmt: skip
                pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
                try:
                    return await measure_all(
                        pool, url, data_dir, {1: one, 2: two}, bare, seconds, rounds, accounts
                    )
                finally:
                    await pool.close()


async def measure_all(
    pool: asyncpg.Pool,
    url: str,
    data_dir: Path,
    servers: dict[int, service.Server],
    bare: service.Server,
    seconds: int,
    rounds: int,
    accounts: int,
) -> str:
    progress(f"{accounts:,} accounts and {CREDITS_TOKENS} credits tokens")
    token = await service.create_token(url, data_dir, "ledger:write")
    names = [ACCOUNT.format(n) for n in range(accounts)]
    await service.open_accounts(servers[1].url, token, names, allowance=1_000_000_000)
    credit_tokens = [
        await service.create_token(url, data_dir, "credits", account_id=names[n])
        for n in range(CREDITS_TOKENS)
    ]
    await wait_for_projector(pool)
    args = {n: loads(s.url, token, credit_tokens, accounts) for n, s in servers.items()}
    baseline = {
        "spend": ["post", "--url", bare.url, "--path", "/insert", "--token", token],
        "credits": ["get", "--url", bare.url, "--path", "/hello", "--token", token],
    }
    duration = ["--seconds", str(seconds)]
    results: dict[tuple[str, str], list[Phase]] = {}
    for kind in ("spend", "credits"):
        contenders: list[tuple[str, service.Server, list[str]]] = [
            ("bare", bare, baseline[kind]),
            *((f"{n} worker{'s' if n > 1 else ''}", servers[n], args[n][kind]) for n in servers),
        ]
        progress(f"warming up: {kind}")
        for _, _, load_args in contenders:
            await load(*load_args, "--seconds", "1")
        await wait_for_projector(pool)
        for number in range(rounds):
            turn = number % len(contenders)
            for label, server, load_args in contenders[turn:] + contenders[:turn]:
                phase = await measured(server, pool, *load_args, *duration,
                                       count_transactions=False)  # fmt: skip
                results.setdefault((kind, label), []).append(phase)
                await wait_for_projector(pool)
            progress(
                f"{kind} round {number + 1}: "
                + ", ".join(f"{k[1]} {v[-1].rate:,.0f}/s" for k, v in results.items() if k[0] == kind)
            )  # fmt: skip
    return report({key: combine(phases) for key, phases in results.items()}, seconds, rounds)


def report(phases: dict[tuple[str, str], Phase], seconds: int, rounds: int) -> str:
    lines = [
        "| load | server | requests/s | p99 ms | CPU µs per request (process tree) "
        "| vs bare | vs 1 worker |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind, bare_name in (("spend", "bare INSERT"), ("credits", "bare JSON")):
        bare, one = phases[(kind, "bare")], phases[(kind, "1 worker")]
        for label in ("bare", "1 worker", "2 workers"):
            phase = phases[(kind, label)]
            cpu = 1e6 * phase.tree_cpu_seconds / phase.requests if phase.requests else 0.0
            name = bare_name if label == "bare" else f"`ledger serve --workers {label[0]}`"
            lines.append(
                f"| {kind} | {name} | {phase.rate:,.0f} | {phase.latency_ms('p99'):.1f} "
                f"| {cpu:,.0f} | {phase.rate / bare.rate:.2f}x | "
                + ("—" if label == "bare" else f"{phase.rate / one.rate:.2f}x")
                + " |"
            )
    failures = {f"{k[0]} {k[1]}": p.failures for k, p in phases.items()}
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        "",
        f"wrk, 1 thread, 64 connections, {rounds} rounds of {seconds} s per server, taking "
        f"turns; one projector (`ledger project`) throughout; load average at the end "
        f"{load_average}; non-2xx answers or socket errors: {failures}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers",
        description="Spends and balance reads on `ledger serve --workers 1` and `--workers 2`"
        " against the bare baseline, in the same run; print a markdown table.",
    )
    parser.add_argument("--database-url", default=TCP_URL,
                        help=f"a PostgreSQL server to create the benchmark's database on "
                             f"(default {TCP_URL})")  # fmt: skip
    parser.add_argument("--seconds", type=int, default=5, help="per round and server (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per load (3)")
    parser.add_argument("--accounts", type=int, default=1000, help="accounts spent on (1,000)")
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.database_url, args.seconds, args.rounds, args.accounts)))


if __name__ == "__main__":
    main()

"""``ledger serve --workers 1`` against ``--workers 2``, and against the same app on
granian, on this machine, in the same run.

On one fresh database: the Stripe stand-in, one projector (``ledger project``), three
servers of the ledger without a projector (``ledger serve --no-projector`` with one API
process and with two on one port, as users run it on uvicorn + uvloop + httptools; the
same app on granian with one worker, ``bench.granian_ledger``) and the bare baseline
app (uvicorn + uvloop + httptools), each a process of its own; 1,000 accounts and 4
``credits`` tokens. Then rounds of: bare INSERT and spends on each server; then rounds
of: bare JSON and ``GET /v1/credits`` on each. The servers take turns (only one is
loaded at a time), so each load has the machine the others leave; the order within a
round turns with every round.

``python -m bench.workers [--database-url URL]`` prints a markdown table: requests/s,
p99 and CPU per request (the server's whole process tree) for each, and the ratios to
the bare baseline and to one worker. The default database server is the machine's
PostgreSQL over TCP (``bench.postgres``), the configuration ``docs/scaling.md`` quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import checkouts, service
from bench.measure import Phase, combine, load, measured
from bench.postgres import TCP_URL, bench_database, set_up_ledger
from bench.sampling import wait_for_projector
from ledger.store.event_store import EventStore

ACCOUNT = "acct_bench_{:04d}"
CREDITS_TOKENS = 4
DELIVERIES_PER_SECOND = 6_000
"""More Stripe deliveries a second than a server answers here: a load never runs out."""
ONE, TWO, GRANIAN = "1 worker", "2 workers", "granian, 1 worker"
SERVER_NAMES = {
    ONE: "`ledger serve --workers 1`",
    TWO: "`ledger serve --workers 2`",
    GRANIAN: "the same app on granian (1 worker)",
}


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


@contextlib.asynccontextmanager
async def on_granian(
    database_url: str, stripe_api_base: str, data_dir: Path, logs: Path
) -> AsyncIterator[service.Server]:
    """The ledger's app (no projector) under granian with one worker, until the block ends."""
    port = service.free_port()
    env = service.service_env(database_url, data_dir, STRIPE_API_BASE=stripe_api_base)
    granian = Path(sys.executable).with_name("granian")
    command = [
        str(granian) if granian.exists() else "granian",
        "--interface", "asgi", "--loop", "uvloop", "--workers", "1", "--no-ws",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--factory", "bench.granian_ledger:app_from_env",
    ]  # fmt: skip
    async with service.spawn(
        "ledger on granian", command, env, logs / "ledger-granian.log",
        f"http://127.0.0.1:{port}", "/readyz", kind="granian",
    ) as server:  # fmt: skip
        yield server


def loads(url: str, token: str, credit_tokens: list[str], accounts: int) -> dict[str, list[str]]:
    """``bench.load`` arguments (without the duration) of the spend and read loads on ``url``."""
    readers = [arg for t in credit_tokens for arg in ("--token", t)]
    return {
        "spend": ["post", "--url", url, "--path", "/v1/accounts/acct_bench_%04d/spend",
                  "--accounts", str(accounts), "--token", token],
        "credits": ["get", "--url", url, "--path", "/v1/credits", *readers],
    }  # fmt: skip


Starter = Callable[[], contextlib.AbstractAsyncContextManager[service.Server]]


@dataclass(frozen=True)
class Stage:
    """What the servers compared run against: the database, the stand-in, where to write."""

    url: str
    stripe_api_base: str
    data_dir: Path
    logs: Path


async def take_turns(
    database_url: str,
    seconds: int,
    rounds: int,
    accounts: int,
    servers_on: Callable[[Stage], dict[str, Starter]],
    *,
    webhooks: bool = False,
) -> dict[tuple[str, str], list[Phase]]:
    """Set up (a fresh database, the stand-in, one projector, the bare app), then
    ``measure_all`` the servers ``servers_on`` gives for that stage."""
    with tempfile.TemporaryDirectory(prefix="ledger-bench-workers-") as folder:
        data_dir, logs = Path(folder) / "data", Path(folder)
        async with bench_database(database_url) as url:
            await set_up_ledger(url)  # roles, functions, migrations, as `ledger db setup`
            async with (
                service.stripe_standin(logs) as standin,
                projector(url, data_dir, logs),
                service.baseline_app(url, logs, "uvicorn") as bare,
            ):
                servers = servers_on(Stage(url, standin.url, data_dir, logs))
                pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
                try:
                    return await measure_all(
                        pool, url, data_dir, servers, bare, seconds, rounds, accounts,
                        webhooks=webhooks,
                    )  # fmt: skip
                finally:
                    await pool.close()


async def run(database_url: str, seconds: int, rounds: int, accounts: int) -> str:
    """Set up, measure, and return the markdown report."""

    def servers_on(stage: Stage) -> dict[str, Starter]:
        def serve(workers: int) -> Starter:
            return lambda: service.ledger_service(
                stage.url, stage.stripe_api_base, stage.data_dir, stage.logs, "--no-projector",
                "--workers", str(workers), name=f"ledger serve {workers} workers",
            )  # fmt: skip

        return {
            ONE: serve(1),
            TWO: serve(2),
            GRANIAN: lambda: on_granian(
                stage.url, stage.stripe_api_base, stage.data_dir, stage.logs
            ),
        }

    results = await take_turns(database_url, seconds, rounds, accounts, servers_on)
    return report({key: combine(phases) for key, phases in results.items()}, seconds, rounds)


async def measure_all(
    pool: asyncpg.Pool,
    url: str,
    data_dir: Path,
    servers: dict[str, Starter],
    bare: service.Server,
    seconds: int,
    rounds: int,
    accounts: int,
    *,
    webhooks: bool = False,
) -> dict[tuple[str, str], list[Phase]]:
    """Rounds in which the bare app and each server (started for its turn, warmed up,
    then stopped: only one holds its pool of connections at a time) take both loads; then,
    with ``webhooks``, rounds of the servers' Stripe deliveries of paid sessions (their
    baseline is the bare INSERT); each (load, server)'s phases, a round each. The first
    server opens the accounts."""
    progress(f"{accounts:,} accounts and {CREDITS_TOKENS} credits tokens")
    token = await service.create_token(url, data_dir, "ledger:write")
    names = [ACCOUNT.format(n) for n in range(accounts)]
    async with next(iter(servers.values()))() as server:
        await service.open_accounts(server.url, token, names, allowance=1_000_000_000)
    credit_tokens = [
        await service.create_token(url, data_dir, "credits", account_id=names[n])
        for n in range(CREDITS_TOKENS)
    ]
    await wait_for_projector(pool)
    duration = ["--seconds", str(seconds)]
    results: dict[tuple[str, str], list[Phase]] = {}

    async def deliveries(server: service.Server, seconds: int) -> list[str]:
        """Signed deliveries enough for ``seconds``, of sessions recorded just now as a
        purchase records them (``bench.checkouts``)."""
        count = DELIVERIES_PER_SECOND * seconds + 100
        prefix = ACCOUNT.removesuffix("{:04d}")
        args = await checkouts.new_deliveries(
            EventStore(pool), server.url, count, prefix, accounts, service.WEBHOOK_SECRET
        )
        return [*args, "--seconds", str(seconds)]

    async def take_turn(label: str, server: service.Server, args: dict[str, list[str]]) -> None:
        for kind in ("spend", "credits"):
            await load(*args[kind], "--seconds", "1")  # warm-up: caches, connections
            await wait_for_projector(pool)
            phase = await measured(server, pool, *args[kind], *duration, count_transactions=False)
            results.setdefault((kind, label), []).append(phase)
            await wait_for_projector(pool)

    async def deliver(label: str, server: service.Server) -> None:
        await load(*await deliveries(server, 1))  # warm-up
        await wait_for_projector(pool)
        phase = await measured(
            server, pool, *await deliveries(server, seconds), count_transactions=False
        )
        results.setdefault(("webhook", label), []).append(phase)
        await wait_for_projector(pool)

    orders = turns(["bare", *servers])
    for number in range(rounds):
        for label in orders[number % len(orders)]:
            if label == "bare":
                await take_turn(label, bare, {
                    "spend": ["post", "--url", bare.url, "--path", "/insert", "--token", token],
                    "credits": ["get", "--url", bare.url, "--path", "/hello", "--token", token],
                })  # fmt: skip
                continue
            async with servers[label]() as server:
                await take_turn(label, server, loads(server.url, token, credit_tokens, accounts))
        progress(
            f"round {number + 1}: "
            + ", ".join(f"{kind} {label} {v[-1].rate:,.0f}/s" for (kind, label), v in results.items())
        )  # fmt: skip
    # Deliveries after every other round, as `make bench` runs them: each phase leaves tens
    # of thousands of new rows (sessions recorded, then paid), and the vacuum that follows
    # would slow whichever server came next.
    delivery_orders = turns([*servers])
    for number in range(rounds if webhooks else 0):
        for label in delivery_orders[number % len(delivery_orders)]:
            async with servers[label]() as server:
                await deliver(label, server)
        progress(f"webhook round {number + 1}: " + ", ".join(
            f"{label} {v[-1].rate:,.0f}/s" for (kind, label), v in results.items() if kind == "webhook"
        ))  # fmt: skip
    return results


def turns(labels: list[str]) -> list[list[str]]:
    """The order of each round: every order of three or fewer, else each rotation.

    What ran just before a load leaves work behind (its views to catch up, its rows to
    vacuum). Rotating ``bare, A, B`` put B after A, and A after the bare app, in two
    rounds of three; in three runs so B's reads measured 0.88-0.93x of A's whatever the
    change. Over every order each follows each as often.
    """
    if len(labels) <= 3:
        return [list(order) for order in itertools.permutations(labels)]
    return [labels[turn:] + labels[:turn] for turn in range(len(labels))]


WEBHOOK_ROWS = ("webhook", "bare INSERT")
"""The deliveries' rows: against the bare INSERT, as `make bench` compares them."""


def report(
    phases: dict[tuple[str, str], Phase],
    seconds: int,
    rounds: int,
    names: dict[str, str] = SERVER_NAMES,
    first: str = ONE,
) -> str:
    """The table: each server (``names``: label to what the table calls it) against the
    bare app and against the ``first``."""
    lines = [
        "| load | server | requests/s | p99 ms | CPU µs per request (process tree) "
        f"| vs bare | vs {names[first]} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind, bare_name in (("spend", "bare INSERT"), ("credits", "bare JSON"), WEBHOOK_ROWS):
        if (kind, first) not in phases:
            continue
        bare, one = phases.get((kind, "bare"), phases[("spend", "bare")]), phases[(kind, first)]
        for label in ("bare", *names):
            if (kind, label) not in phases:
                continue
            phase = phases[(kind, label)]
            cpu = 1e6 * phase.tree_cpu_seconds / phase.requests if phase.requests else 0.0
            name = bare_name if label == "bare" else names[label]
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
        f"wrk, 1 thread, 64 connections, {rounds} rounds of {seconds} s per load and server "
        f"(after 1 s of warm-up), the servers taking turns, each started for its turn; one "
        f"projector (`ledger project`) throughout; load average at the end "
        f"{load_average}; non-2xx answers or socket errors: {failures}.",
    ]
    return "\n".join(lines)


def add_stage_options(parser: argparse.ArgumentParser, *, seconds: int, rounds: int) -> None:
    """The options of ``take_turns``: the database server, the rounds and the accounts."""
    parser.add_argument("--database-url", default=TCP_URL,
                        help=f"a PostgreSQL server to create the benchmark's database on "
                             f"(default {TCP_URL})")  # fmt: skip
    parser.add_argument("--seconds", type=int, default=seconds,
                        help=f"per round and server ({seconds})")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds per load ({rounds})")
    parser.add_argument("--accounts", type=int, default=1000, help="accounts spent on (1,000)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers",
        description="Spends and balance reads on `ledger serve --workers 1`, `--workers 2` and"
        " the same app on granian, against the bare baseline, in the same run; print a markdown"
        " table.",
    )
    add_stage_options(parser, seconds=5, rounds=3)
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.database_url, args.seconds, args.rounds, args.accounts)))


if __name__ == "__main__":
    main()

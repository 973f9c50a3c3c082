"""The projector of two checkouts of the code under the same steady load.

Makes a fresh database with 500 accounts, then, for each round and each variant in
turn: starts that variant's ``Projector`` in a process of its own (in the variant's
checkout, ``bench.variants``; uvloop, a pool as the service's), lets it catch up, sends
commands through the ``Ledger`` at a fixed rate from this process (32 tasks, the group
committer, NOTIFY after each commit as in the service), and stops it. The load is
spends of 1 credit (``--load spends``, one event each), or Stripe deliveries of
``checkout.session.completed`` for sessions recorded just before the round
(``--load webhooks``: two events each, the session paid and the account credited, the
payment intent's link a claim; ``bench.checkouts``). It prints the projector's CPU seconds and
CPU per event over the load, the CPU of the PostgreSQL backends serving it (its
connections are the only ones of the service's role here; the server must be on this
machine, as the default is), its batches and how many of them applied nothing, the
whole machine's busy CPU seconds meanwhile (the load, PostgreSQL and the projector
together), and the projection lag of the spends (or of the purchases' credits)
(``bench.sampling``: from each event's ``recorded_at`` to the first 5 ms poll where
``balances`` and ``statement`` have passed it).

    python -m bench.projector_compare --variant before=/tmp/base --variant after=. \\
        --rate 2000 --seconds 4 --rounds 4 [--load webhooks]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import psutil

from bench import checkouts
from bench.load import checkout_completed
from bench.measure import cpu_seconds, machine_busy_seconds
from bench.postgres import bench_database, set_up_ledger
from bench.sampling import SPEND_TOPICS, Sampler, head, percentile, recorded_between
from bench.variants import named_checkout, runs_in
from ledger.domain.events import CreditsPurchased, topics_of

if TYPE_CHECKING:
    from ledger.service import Ledger

ACCOUNTS = 500
ACCOUNT_PREFIX = "acct_"
WORKERS = 32

LAGGED = {"spends": SPEND_TOPICS, "webhooks": topics_of(CreditsPurchased)}
"""The loads, and the events whose projection lag each reports."""


def account(number: int) -> str:
    """The account id ``bench.checkouts.sessions`` gives a session too."""
    return f"{ACCOUNT_PREFIX}{number:04d}"


PROJECTOR = """
import asyncio, json, signal, sys, time
from api import database
from api.database import create_pool
from ledger import event_loop
from ledger.store.event_store import EventStore
from projections import runner

counts = {"batches": 0, "empty": 0}
# What catch_up calls a batch at: apply_batch, or (since it holds one connection for a
# whole catch-up) _apply_batch_on.
CALLED = "_apply_batch_on" if hasattr(runner, "_apply_batch_on") else "apply_batch"
apply_batch = getattr(runner, CALLED)

async def counted(*args, **kwargs):
    applied = await apply_batch(*args, **kwargs)
    counts["batches"] += 1
    counts["empty"] += not any(applied.values())
    return applied

setattr(runner, CALLED, counted)

CAUGHT_UP = ("SELECT (SELECT coalesce(max(notification_id), 0) FROM stored_events)"
             " <= (SELECT coalesce(min(position), 0) FROM projection_positions)")

async def main(url):
    # The sessions `ledger project` opens (checkouts before PROJECTOR_SETTINGS: the service's).
    if hasattr(database, "PROJECTOR_SETTINGS"):
        pool = await create_pool(url, server_settings=database.PROJECTOR_SETTINGS)
    else:
        pool = await create_pool(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(runner.Projector(EventStore(pool), url).run(stop))
    await asyncio.sleep(0.2)
    while not await pool.fetchval(CAUGHT_UP):  # with what is there
        await asyncio.sleep(0.05)
    counts.update(batches=0, empty=0)
    cpu = time.process_time()
    print("ready", flush=True)
    await task
    print(json.dumps({"cpu": time.process_time() - cpu, **counts}), flush=True)
    await pool.close()

event_loop.run(main(sys.argv[1]))
"""


async def open_accounts(url: str) -> None:
    from ledger.bootstrap import build_ledger
    from ledger.commands import OpenAccount

    pool = await asyncpg.create_pool(url, min_size=2, max_size=10)
    try:
        ledger = build_ledger(pool)
        for n in range(ACCOUNTS):
            await ledger.execute(OpenAccount(account_id=account(n), monthly_allowance=10_000_000))
        await ledger.uow.committer.stop()
    finally:
        await pool.close()


async def steadily(
    url: str, seconds: float, rate: int, send: Callable[[Ledger, int], Awaitable[bool]]
) -> int:
    """``send`` one command (the how-manyth, from 0) through a ``Ledger`` of its own,
    ``rate`` a second from 32 tasks, for ``seconds`` or until it says there is nothing
    more to send; how many it sent."""
    from ledger.bootstrap import build_ledger

    pool = await asyncpg.create_pool(url, min_size=4, max_size=20)
    ledger = build_ledger(pool)
    made = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal made
        while (elapsed := time.perf_counter() - started) < seconds:
            if (due := made / rate) > elapsed:
                await asyncio.sleep(due - elapsed)
            made += 1
            if not await send(ledger, made - 1):
                made -= 1
                return

    try:
        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        await ledger.uow.committer.stop()
    finally:
        await pool.close()
    return made


async def spend_steadily(url: str, seconds: float, rate: int) -> int:
    """Spends of 1 credit on the accounts in turn, ``rate`` a second; how many were made."""
    from ledger.commands import SpendCredits

    async def spend(ledger: Ledger, number: int) -> bool:
        await ledger.execute(
            SpendCredits(
                account_id=account(number % ACCOUNTS),
                amount=1,
                reason="projector_compare",
                idempotency_key=uuid.uuid4().hex,
            )
        )
        return True

    return await steadily(url, seconds, rate, spend)


def sessions_for(seconds: float, rate: int) -> int:
    """Sessions enough for a round: workers that wait for the same moment may all go past
    the round's end once."""
    return int(seconds * rate * 1.1) + WORKERS


async def record_sessions(url: str, count: int) -> str:
    """``CheckoutRequested`` of ``count`` sessions, as the service records a purchase; their
    nonce (``bench.checkouts``)."""
    from ledger.store.event_store import EventStore

    nonce = uuid.uuid4().hex[:8]
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        await checkouts.record_requested(EventStore(pool), nonce, count, ACCOUNT_PREFIX, ACCOUNTS)
    finally:
        await pool.close()
    return nonce


async def pay_steadily(url: str, seconds: float, rate: int, nonce: str) -> int:
    """Stripe's ``checkout.session.completed`` of the sessions recorded under ``nonce``,
    verified bodies decoded as the webhook route does, ``rate`` a second; how many."""
    from ledger.adapters.stripe_webhooks import parse_event

    deliveries = iter(
        checkout_completed(session_id, account_id, checkouts.CREDITS).encode()
        for session_id, account_id in checkouts.sessions(
            nonce, sessions_for(seconds, rate), ACCOUNT_PREFIX, ACCOUNTS
        )
    )

    async def pay(ledger: Ledger, _: int) -> bool:
        if (body := next(deliveries, None)) is None:
            return False
        envelope, meaning = parse_event(body)
        await ledger.apply_payment_event(envelope.id, envelope.type, meaning)
        return True

    return await steadily(url, seconds, rate, pay)


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process so far (0 once it is gone)."""
    try:
        return cpu_seconds([psutil.Process(pid)])
    except psutil.NoSuchProcess:
        return 0.0


async def projector_backends(pool: asyncpg.Pool) -> dict[int, float]:
    """The backends of the projector's connections (the service's role), by pid: CPU so far."""
    pids = await pool.fetch(
        """SELECT pid FROM pg_stat_activity
           WHERE usename = 'ledger_service' AND datname = current_database()"""
    )
    return {row["pid"]: process_cpu_seconds(row["pid"]) for row in pids}


async def one_round(url: str, name: str, code: Path, args: argparse.Namespace) -> str:
    nonce = None
    if args.load == "webhooks":
        nonce = await record_sessions(url, sessions_for(args.seconds, args.rate))
    pool = await asyncpg.create_pool(url, min_size=2, max_size=2)
    try:
        return await _one_round(pool, url, name, code, args, nonce)
    finally:
        await pool.close()


async def _one_round(
    pool: asyncpg.Pool,
    url: str,
    name: str,
    code: Path,
    args: argparse.Namespace,
    nonce: str | None,
) -> str:
    """One variant's round: its projector in a process of its own, under the load."""
    projector = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROJECTOR,
        url,
        stdout=asyncio.subprocess.PIPE,
        **runs_in(code),
    )
    try:
        return await _measured(pool, url, name, projector, args, nonce)
    finally:
        if projector.returncode is None:  # the round failed: leave no projector behind
            projector.kill()
            await projector.wait()


async def _measured(
    pool: asyncpg.Pool,
    url: str,
    name: str,
    projector: asyncio.subprocess.Process,
    args: argparse.Namespace,
    nonce: str | None,
) -> str:
    assert projector.stdout is not None
    await projector.stdout.readline()  # "ready"
    first = await head(pool)
    backends = await projector_backends(pool)
    busy = machine_busy_seconds()
    async with Sampler(pool, server=None).running() as sampler:
        if nonce is None:
            commands = await spend_steadily(url, args.seconds, args.rate)
        else:
            commands = await pay_steadily(url, args.seconds, args.rate, nonce)
        busy = machine_busy_seconds() - busy
        after = await projector_backends(pool)
        last = await head(pool)
        await sampler.until_caught_up(last, limit=60.0)
    lags = sampler.lags(await recorded_between(pool, first, last, LAGGED[args.load]))
    postgres = sum(cpu - backends.get(pid, 0.0) for pid, cpu in after.items())
    projector.send_signal(signal.SIGTERM)
    report = json.loads((await projector.stdout.read()).decode().splitlines()[-1])
    await projector.wait()
    events = await head(pool) - first
    return (
        f"{name:>10}: {commands:,} {args.load}, {events:,} events; projector {report['cpu']:.2f} CPU s"
        f" ({report['cpu'] / max(events, 1) * 1e6:.0f} µs an event), its PostgreSQL backends"
        f" {postgres:.2f} CPU s ({postgres / max(events, 1) * 1e6:.0f} µs), {report['batches']:,}"
        f" batches ({report['empty']:,} empty); machine busy {busy:.2f} CPU s; lag p50"
        f" {percentile(lags, 50) * 1000:.0f} ms, p99 {percentile(lags, 99) * 1000:.0f} ms"
    )


async def compare(args: argparse.Namespace, variants: list[tuple[str, Path]]) -> None:
    async with bench_database(args.server_url) as url:
        await set_up_ledger(url)
        await open_accounts(url)
        for round_number in range(1, args.rounds + 1):
            for name, code in variants:
                line = await one_round(url, name, code, args)
                print(f"round {round_number}: {line}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.projector_compare", description=__doc__)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--load", choices=tuple(LAGGED), default="spends", help="default spends")
    parser.add_argument("--rate", type=int, default=2000, help="commands a second (default 2,000)")
    parser.add_argument("--seconds", type=float, default=4.0, help="load per round (default 4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variant", action="append", required=True, help="name=code_path, repeatable"
    )
    args = parser.parse_args(argv)
    asyncio.run(compare(args, [named_checkout(text) for text in args.variant]))


if __name__ == "__main__":
    main()

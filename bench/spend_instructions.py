"""Instructions a spend costs the API process, counted by callgrind (not timed).

The app (``api.app.create_app``, its lifespan run as ``ledger serve`` runs it, uvloop,
``configure_logging`` at INFO with JSON lines) is driven in process through hand-made
ASGI calls, as uvicorn with httptools calls it: no server, no socket, no client. A few
accounts are opened and a ``ledger:write`` token issued; ``--warm-up`` spends run first
(caches, plans, label children), then ``--spends`` spends, one at a time (each a lone
command of the group committer) or ``--concurrency`` at once, round robin over the
accounts, ``{"amount": 1}`` with a fresh ``Idempotency-Key`` each.

Under callgrind only the measured spends are counted: the driver calls ``zlib.adler32``
just before them and ``zlib.crc32`` just after (``--zero-before=adler32
--dump-before=crc32``), so start-up, warm-up and shut-down fall outside the dump. The
count is the whole process's (the group committer's and asyncpg's work included,
PostgreSQL's not: it is another process) divided by the spends.

    python -m bench.spend_instructions --runs 3            # instructions a spend, 3 runs
    python -m bench.spend_instructions --keep /tmp/cg      # keep the dumps (callgrind_annotate)
    python -m bench.spend_instructions --split             # + self instructions by object
    python -m bench.spend_instructions --direct            # the command alone, no HTTP
    python -m bench.spend_instructions --no-valgrind       # the driver alone (a check)
    python -m bench.spend_instructions --no-valgrind --cprofile --runs 1  # rank Python functions
    python -m bench.spend_instructions --webhook --runs 3   # a paid Stripe delivery instead

``--webhook`` measures a ``POST /v1/stripe/webhook`` of a paid ``checkout.session.completed``
(one ``CheckoutPaid`` and one ``CreditsPurchased``) in place of a spend, as the bench's
webhook phase delivers them: the app runs with the bench's Stripe key and webhook secret
(``bench.service``), the ``CheckoutRequested`` of every session is appended first through
the store (``bench.checkouts.record_requested``, so the app holds no session in its
cache), and each delivery (``bench.load.checkout_completed``, signed with the SDK's
``WebhookSignature``) is made and signed before the markers; ``--spends`` counts
deliveries then, and ``--direct`` runs the route's ``receive_delivery`` without HTTP.

The count is of a steady stream of requests, as a served process pays for each: the
app's heap is settled once its start-up is done, as ``ledger serve`` settles it
(``ledger.heap.settle_after_start_up``), and what comes per second of wall time rather
than per request is made rare (``AS_SERVED``), since under callgrind a run lasts some
fifty times longer than at native speed, and longer still on a busy machine: the expiry
sweep (every second) and the clock check (every 5 s), the tokens' cache and the writes
of their last use (30 s, 60 s), and the connections the committer's writers and the
commands' loads keep while idle (0.1 s), which a writer gave back and took again between
two requests that a native-speed stream sends within that time. Counted with them, two
identical runs moved up to 15 % on a busy machine; without, 0.1 %.

Each run creates a database ``<prefix><random>`` on ``--server`` and drops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import secrets
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from bench.callgrind import counted_run, counted_runs

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _database_url(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _create(server: str, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def _drop(server: str, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# -- the driver (the process callgrind counts) ------------------------------------------


def _scope(path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, object]:
    """An HTTP ``POST`` scope as uvicorn with httptools makes one."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            *headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "state": {},
    }


async def _spend(app: object, account_id: str, token: str, n: int) -> int:
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"idempotency-key", f"spend-{n}-{secrets.token_hex(8)}".encode()),
    ]
    return await _post(app, f"/v1/accounts/{account_id}/spend", headers, b'{"amount": 1}')


async def _post(app: object, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    scope = _scope(path, headers, body)
    sent_body = False
    status = 0

    async def receive() -> dict[str, object]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # a client that stays
        raise AssertionError

    async def send(message: dict[str, object]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]

    await app(scope, receive, send)  # type: ignore[operator]
    return status


async def _drive(args: argparse.Namespace) -> None:
    import logging

    from api.access.tokens import Scope
    from api.app import create_app
    from api.log_context import configure_logging
    from api.settings import Settings
    from bench import service
    from ledger.commands import OpenAccount
    from ledger.heap import settle_after_start_up

    os.environ["LEDGER_LOG_FORMAT"] = "json"
    configure_logging(logging.INFO)  # as `ledger serve -v` logs: an access line a request
    _set_steady_stream_times()
    with tempfile.TemporaryDirectory(prefix="spend-instructions-") as data_dir:
        settings = Settings(database_url=args.database_url, data_dir=Path(data_dir))
        if args.webhook:  # as the bench serves it; nothing asks Stripe (port 9: discard)
            settings = msgspec.structs.replace(
                settings,
                stripe_secret_key=service.STRIPE_KEY,
                stripe_webhook_secret=service.WEBHOOK_SECRET,
                stripe_api_base="http://127.0.0.1:9",
            )
        app = create_app(settings, sweep_seconds=RARELY, clock_check_seconds=RARELY)
        async with app.lifespan():
            settle_after_start_up()  # as `ledger serve` does once the app has started
            services = app.state.services
            services.tokens.cache_seconds = RARELY
            print(AS_SERVED)
            token = (await services.tokens.issue(Scope.LEDGER_WRITE, name="bench")).secret
            accounts = [f"{ACCOUNT_PREFIX}{i:04d}" for i in range(args.accounts)]
            for account_id in accounts:
                await services.ledger.execute(
                    OpenAccount(account_id=account_id, monthly_allowance=10_000_000)
                )
            if args.webhook:
                one = await _webhook_deliveries(app, args)
            else:
                one = _spends(app, args, accounts, token)
            statuses: dict[int, int] = {}

            async def run(first: int, count: int) -> None:
                async def one_by_one(offset: int) -> None:
                    for n in range(first + offset, first + count, args.concurrency):
                        status = await one(n)
                        statuses[status] = statuses.get(status, 0) + 1

                await asyncio.gather(*(one_by_one(i) for i in range(args.concurrency)))

            await run(0, args.warm_up)
            profiler = cProfile.Profile() if args.profile_to else None
            zlib.adler32(b"")  # callgrind: --zero-before=adler32
            if profiler is not None:
                profiler.enable()
            await run(args.warm_up, args.spends)
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile_to)
            zlib.crc32(b"")  # callgrind: --dump-before=crc32
            if args.webhook:
                await _check_credited(services.store, args.warm_up + args.spends)
        print(f"statuses: {statuses}")
        if set(statuses) != {200}:
            raise SystemExit(f"not every request answered 200: {statuses}")


RARELY = 86_400.0
"""Seconds between the runs of work that comes per second of wall time (a day: never
within a run)."""
KEPT_IDLE = 5.0
"""Seconds a writer and the commands' loads keep their connection idle (0.1 served): far
beyond the gap between two requests under callgrind (tens of milliseconds, a few hundred on a
busy machine), and short enough for the app's shut-down, whose pool waits for the loads'."""
AS_SERVED = (
    "as served, a steady stream: heap settled as `ledger serve` settles it; expiry sweep, "
    "clock check, token cache and token use writes once a day; idle connections kept "
    f"{KEPT_IDLE:g} s"
)


def _set_steady_stream_times() -> None:
    """The writers' and the commands' loads' connections kept ``KEPT_IDLE`` seconds idle, a
    token's use written once a day (``RARELY``): module settings, so before the app is made."""
    from api.access import tokens
    from ledger.store import commit, event_store

    commit.KEEP_IDLE = KEPT_IDLE
    event_store.LOADS_KEEP_IDLE = KEPT_IDLE
    tokens.USE_RECORDED_EVERY_SECONDS = RARELY


ACCOUNT_PREFIX = "acct_instr_"


async def _check_credited(store: Any, count: int) -> None:
    """Each delivery paid its session once: one ``CheckoutPaid`` and one ``CreditsPurchased``."""
    from ledger.store.mapper import event_type_name

    rows = await store.pool.fetch("SELECT topic, count(*) FROM stored_events GROUP BY topic")
    recorded = {event_type_name(row[0]): row[1] for row in rows}
    print(f"recorded: {dict(sorted(recorded.items()))}")
    paid = (recorded.get("CheckoutPaid"), recorded.get("CreditsPurchased"))
    if paid != (count, count):
        raise SystemExit(f"{count} deliveries recorded {paid} CheckoutPaid, CreditsPurchased")


One = Callable[[int], Awaitable[int]]
"""The n-th request, its status."""


def _spends(app: Any, args: argparse.Namespace, accounts: list[str], token: str) -> One:
    """Spends round robin over the accounts, each with a fresh idempotency key."""
    from ledger.commands import SpendCredits

    services = app.state.services

    async def one(n: int) -> int:
        account_id = accounts[n % len(accounts)]
        if not args.direct:
            return await _spend(app, account_id, token, n)
        # the command alone, as the route runs it
        await services.ledger.execute(
            SpendCredits(
                account_id=account_id,
                amount=1,
                reason="",
                idempotency_key=f"spend-{n}-{secrets.token_hex(8)}",
            )
        )
        return 200

    return one


SIGNED_AHEAD = 3600


async def _webhook_deliveries(app: Any, args: argparse.Namespace) -> One:
    """Paid deliveries of sessions recorded first (``bench.checkouts``), each made and signed
    now, so that only their delivery is measured. Each is signed as of ``SIGNED_AHEAD``
    seconds from now: Stripe's check refuses a signature older than 300 s and none newer,
    and under callgrind on a busy machine the deliveries outlast 300 s."""
    import stripe

    from api.routes.stripe_webhook import receive_delivery
    from bench import checkouts, service
    from bench.load import checkout_completed

    services = app.state.services
    nonce = secrets.token_hex(4)
    count = args.warm_up + args.spends
    await checkouts.record_requested(services.store, nonce, count, ACCOUNT_PREFIX, args.accounts)
    deliveries = []
    for session_id, account_id in checkouts.sessions(nonce, count, ACCOUNT_PREFIX, args.accounts):
        text = checkout_completed(session_id, account_id, checkouts.CREDITS)
        signature = stripe.WebhookSignature.generate_signature_header(
            text, service.WEBHOOK_SECRET, timestamp=int(time.time()) + SIGNED_AHEAD
        )
        deliveries.append((signature, text.encode()))

    async def one(n: int) -> int:
        signature, body = deliveries[n]
        if args.direct:  # the route's work without HTTP
            await receive_delivery(services, body, signature)
            return 200
        headers = [(b"stripe-signature", signature.encode())]
        return await _post(app, "/v1/stripe/webhook", headers, body)

    return one


# -- the runs ------------------------------------------------------------------------------


def _one_run(args: argparse.Namespace, run: int, out_dir: Path) -> int | None:
    name = f"{args.prefix}{secrets.token_hex(4)}"
    asyncio.run(_create(args.server, name))
    try:
        command = [
            sys.executable, "-m", "bench.spend_instructions", "--drive",
            "--database-url", _database_url(args.server, name),
            "--spends", str(args.spends), "--warm-up", str(args.warm_up),
            "--accounts", str(args.accounts), "--concurrency", str(args.concurrency),
            *(["--direct"] if args.direct else []),
            *(["--webhook"] if args.webhook else []),
        ]  # fmt: skip
        if args.cprofile:
            command += ["--profile-to", str(out_dir / f"cprofile.run{run}")]
        return counted_run(
            command, out_dir, run, valgrind=args.valgrind, cprofile=args.cprofile,
            per=args.spends, unit="a request", split=args.split,
        )  # fmt: skip
    finally:
        asyncio.run(_drop(args.server, name))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.spend_instructions",
        description="Instructions a spend costs the API process in-process (callgrind), "
        "the app driven through hand-made ASGI calls (see the module's docstring).",
    )
    parser.add_argument(
        "--spends", type=int, default=1000, help="measured spends (or deliveries) a run"
    )
    parser.add_argument("--warm-up", type=int, default=200, help="spends before measuring")
    parser.add_argument("--accounts", type=int, default=10, help="accounts spent from")
    parser.add_argument("--concurrency", type=int, default=1, help="spends at once")
    parser.add_argument("--runs", type=int, default=3, help="runs (each its own process)")
    parser.add_argument("--server", default=SERVER, help="PostgreSQL URL (a superuser's)")
    parser.add_argument("--prefix", default="hg_", help="name prefix of each run's database")
    parser.add_argument("--keep", type=Path, help="keep the callgrind dumps in this folder")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="the spend command alone (Ledger.execute, no HTTP): the rest is the HTTP side",
    )
    parser.add_argument(
        "--webhook",
        action="store_true",
        help="paid Stripe deliveries (checkout.session.completed) instead of spends",
    )
    parser.add_argument(
        "--split", action="store_true", help="each shared object's self instructions a spend"
    )
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="with --no-valgrind: cProfile the measured spends (time, for ranking functions)",
    )
    parser.add_argument(
        "--no-valgrind", dest="valgrind", action="store_false", help="run the driver alone"
    )
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        import uvloop

        uvloop.run(_drive(args))
        return
    if args.valgrind and shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    counted_runs(
        args.runs, lambda run, out_dir: _one_run(args, run, out_dir), per=args.spends,
        what="a delivery" if args.webhook else "a spend", keep=args.keep,
        prefix="spend-instructions-",
    )  # fmt: skip


if __name__ == "__main__":
    main()

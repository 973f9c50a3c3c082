"""Start and stop the service as users run it, and give it accounts and tokens.

* the Stripe stand-in in a process of its own (``run_standin`` on a free port): the
  service needs a Stripe base, though purchases are not benchmarked;
* ``ledger serve`` (the API and its projector) with ``DATABASE_URL`` set to the
  benchmark's database, ``PORT`` a free port, ``STRIPE_SECRET_KEY=sk_test_bench``,
  ``STRIPE_API_BASE`` the stand-in, ``STRIPE_WEBHOOK_SECRET=whsec_bench``,
  ``LEDGER_ENV=development`` and ``LEDGER_DATA_DIR`` a temp dir;
* tokens through the ``ledger tokens create`` command; accounts, their history and
  their grants through the Python client (``ledger_client``, clients/python), no SQL;
* the bare baseline app (``bench.baseline_app``) in its own process, under uvicorn with
  uvloop and httptools, or under granian (``--interface asgi --loop uvloop``).

Each server's stack is read from its process once it answers (``bench.machine``).

``python -m bench.service --database-url URL`` starts all of it, prints the URLs and a
``ledger:write`` token, and keeps it running until Ctrl-C (for profiling by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
from ledger_client import Conflict, LedgerClient, ServiceUnavailable

from bench.machine import stack_of

WEBHOOK_SECRET = "whsec_bench"  # noqa: S105 (the benchmark's own, as the issue asks)
STRIPE_KEY = "sk_test_bench"
START_TIMEOUT = 60.0

T = TypeVar("T")

_STANDIN = """
import asyncio, signal, sys
from stripe_standin import run_standin

async def main():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with run_standin(port=int(sys.argv[1])) as standin:
        print(standin.base_url, flush=True)
        await stop.wait()

asyncio.run(main())
"""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ledger_command() -> list[str]:
    """The installed ``ledger`` script next to this Python, else ``python -m api.cli``."""
    script = Path(sys.executable).with_name("ledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


def service_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRIPE_", "LEDGER_", "CREDIT_", "DEFAULT_MONTHLY"))
    }
    env.update(
        DATABASE_URL=database_url,
        STRIPE_SECRET_KEY=STRIPE_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        LEDGER_ENV="development",
        LEDGER_DATA_DIR=str(data_dir),
        HOST="127.0.0.1",
        **extra,
    )
    return env


@dataclass
class Server:
    """A server process of ours and where it listens."""

    name: str
    process: asyncio.subprocess.Process
    url: str
    log: Path
    kind: str = "uvicorn"
    """``uvicorn`` (the server runs in the process itself) or ``granian`` (in a child)."""
    stack: str = ""
    """What the process runs on, read from it once it answers."""

    @property
    def api_pids_are_children(self) -> bool:
        """Whether the requests are served by child processes (granian's workers), not by
        the process itself (uvicorn; ``ledger serve``'s child is the projector)."""
        return self.kind == "granian"

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children."""
        try:
            parent = psutil.Process(self.pid)
            processes = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total


async def _wait_until_answers(server: Server, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.returncode is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(server.url + path)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    tail = server.log.read_text(errors="replace")[-3000:] if server.log.exists() else ""
    raise RuntimeError(f"{server.name} did not start (see {server.log}):\n{tail}")


async def _stop(server: Server) -> None:
    if server.process.returncode is None:
        server.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(server.process.wait(), 20)
        except TimeoutError:
            server.process.kill()
            await server.process.wait()


@contextlib.asynccontextmanager
async def spawn(
    name: str,
    command: list[str],
    env: dict[str, str],
    log: Path,
    url: str,
    ready_path: str,
    kind: str = "uvicorn",
) -> AsyncIterator[Server]:
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=output, stderr=asyncio.subprocess.STDOUT
        )
    server = Server(name, process, url, log, kind=kind)
    try:
        await _wait_until_answers(server, ready_path)
        server.stack = stack_of(server.pid, kind)
        yield server
    finally:
        await _stop(server)


@contextlib.asynccontextmanager
async def stripe_standin(logs: Path) -> AsyncIterator[Server]:
    """The stand-in in its own process, on a free port (it delivers no webhooks: nothing is paid)."""
    async with _spawn_standin(free_port(), logs) as server:
        yield server


@contextlib.asynccontextmanager
async def _spawn_standin(port: int, logs: Path) -> AsyncIterator[Server]:
    log = logs / "stripe-standin.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _STANDIN,
            str(port),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    server = Server("the Stripe stand-in", process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"the Stripe stand-in exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("the Stripe stand-in did not start")
        yield server
    finally:
        await _stop(server)


@contextlib.asynccontextmanager
async def ledger_service(
    database_url: str,
    stripe_api_base: str,
    data_dir: Path,
    logs: Path,
    *options: str,
    name: str = "ledger serve",
) -> AsyncIterator[Server]:
    """``ledger serve OPTIONS`` (by default with its projector, one worker) on a free port,
    until the block ends."""
    port = free_port()
    env = service_env(database_url, data_dir, PORT=str(port), STRIPE_API_BASE=stripe_api_base)
    async with spawn(
        name,
        [*ledger_command(), "serve", *options],
        env,
        logs / f"{name.replace(' ', '-')}.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    ) as server:
        yield server


READS_PER_TURN = "uvicorn-reads-per-turn"
"""The bare app on uvicorn with the protocol ``ledger serve`` runs (api/http_writes.py)."""


def _baseline_command(stack: str, port: int) -> list[str]:
    if stack in ("uvicorn", READS_PER_TURN):
        protocol = ["--reads-per-turn"] if stack == READS_PER_TURN else []
        return [sys.executable, "-m", "bench.baseline_app", "--port", str(port), *protocol]
    granian = Path(sys.executable).with_name("granian")
    return [
        str(granian) if granian.exists() else "granian",
        "--interface", "asgi", "--loop", "uvloop", "--workers", "1", "--no-ws",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--factory", "bench.baseline_app:app_from_env",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def baseline_app(
    database_url: str, logs: Path, stack: str = "uvicorn"
) -> AsyncIterator[Server]:
    """``bench.baseline_app`` on a free port, under uvicorn (+ uvloop + httptools), granian,
    or uvicorn with ``ledger serve``'s protocol (``READS_PER_TURN``)."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url, PORT=str(port))
    async with spawn(
        f"the baseline app on {stack}",
        _baseline_command(stack, port),
        env,
        logs / f"baseline-app-{stack}.log",
        f"http://127.0.0.1:{port}",
        "/hello",
        kind="granian" if stack == "granian" else "uvicorn",
    ) as server:
        yield server


async def create_token(
    database_url: str, data_dir: Path, scope: str, *, account_id: str | None = None
) -> str:
    """A new token from ``ledger tokens create`` (its last line of stdout)."""
    who = ["--account", account_id] if account_id else ["--name", f"bench-{scope}"]
    process = await asyncio.create_subprocess_exec(
        *ledger_command(),
        "tokens",
        "create",
        "--scope",
        scope,
        *who,
        env=service_env(database_url, data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"ledger tokens create failed: {err.decode()[-2000:]}")
    return out.decode().strip().splitlines()[-1]


def _client(url: str, token: str) -> LedgerClient:
    """The Python client (clients/python) as an internal service holds it; retries on."""
    return LedgerClient(url, token, timeout=30)


async def _each(items: list[T], work: Callable[[T], Awaitable[None]], concurrency: int) -> None:
    """``work`` on every item, ``concurrency`` at a time, in the list's order from the end."""

    async def worker() -> None:
        while items:
            await work(items.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


_OPEN_ATTEMPTS = 5
"""An account's opening asked this many times at most while it is answered 503."""


async def open_accounts(
    url: str, token: str, account_ids: Iterable[str], *, allowance: int, concurrency: int = 16
) -> int:
    """Open each account through ``POST /v1/accounts``; an existing one is left as it is."""
    opened = 0

    async with _client(url, token) as ledger:

        async def open_one(account_id: str) -> None:
            nonlocal opened
            # The client sends an opening again only where the request never left: a 503
            # (the account busy, a pool out of connections under the set-up's load) may
            # have opened it, and asking again then answers 409, which is as good.
            for attempt in range(_OPEN_ATTEMPTS):
                try:
                    await ledger.open_account(account_id, monthly_allowance=allowance)
                except Conflict:
                    return
                except ServiceUnavailable:
                    if attempt == _OPEN_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
                else:
                    opened += 1
                    return

        await _each(list(account_ids), open_one, concurrency)
    return opened


async def spend_each(
    url: str, token: str, account_ids: Iterable[str], times: int, *, concurrency: int = 16
) -> None:
    """Spend 1 credit ``times`` times on each account (one account's spends in order)."""
    async with _client(url, token) as ledger:

        async def spend_on(account_id: str) -> None:
            for n in range(times):
                await ledger.spend(
                    account_id, 1, reason="history", idempotency_key=f"setup-{account_id}-{n}"
                )

        await _each(list(account_ids), spend_on, concurrency)


async def grant_each(
    url: str, token: str, account_ids: Iterable[str], grants: int, *, concurrency: int = 16
) -> None:
    """Give each account ``grants`` active grants of every priority, half of them expiring."""
    far = datetime.now(UTC) + timedelta(days=365)

    async with _client(url, token) as ledger:

        async def grant_one(job: tuple[str, int]) -> None:
            account_id, n = job
            await ledger.grant(
                account_id,
                1_000_000,
                priority=n * 2 % 101,
                expires_at=far if n % 2 else None,
                reason="bench",
                idempotency_key=f"setup-{account_id}-grant-{n}",
            )

        jobs = [(account_id, n) for account_id in account_ids for n in range(grants)]
        await _each(jobs, grant_one, concurrency)


async def serve_until_interrupted(database_url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ledger-bench-service-") as folder:
        logs = Path(folder)
        async with (
            stripe_standin(logs) as standin,
            ledger_service(database_url, standin.url, logs / "data", logs) as service,
            baseline_app(database_url, logs) as baseline,
            baseline_app(database_url, logs, "granian") as on_granian,
        ):
            token = await create_token(database_url, logs / "data", "ledger:write")
            print(
                f"ledger serve: {service.url} (pid {service.pid}, {service.stack}); logs in {logs}"
            )
            print(f"baseline app: {baseline.url} (pid {baseline.pid}, {baseline.stack})")
            print(f"baseline app: {on_granian.url} (pid {on_granian.pid}, {on_granian.stack})")
            print(f"stand-in:     {standin.url}")
            print(f"ledger:write token: {token}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.service",
        description="Run the Stripe stand-in, `ledger serve` and the baseline app against a"
        " database (migrated on start) until Ctrl-C; print their URLs and a ledger:write token.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="the database to serve (default: DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or DATABASE_URL is required")
    asyncio.run(serve_until_interrupted(args.database_url))


if __name__ == "__main__":
    main()

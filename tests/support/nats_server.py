"""A nats-server with JetStream that only one test uses, so it may stop and start it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client

from tests.support.servers import bind_free_port


def nats_server_binary() -> str | None:
    """The nats-server executable (Debian installs it in /usr/sbin), or None."""
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")


def _free_port() -> int:
    sock = bind_free_port()
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


class NatsServer:
    """``nats-server -js`` on a free loopback port, its store in ``folder``: kept across restarts."""

    def __init__(self, binary: str, folder: Path, args: Sequence[str] = ()) -> None:
        """``args``: more of nats-server's options (``--tls …``, ``--user …``)."""
        self.binary = binary
        self.folder = folder
        self.args = list(args)
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.folder / "nats-server.log"

    async def start(self, *, seconds: float = 30) -> None:
        """Start it and wait until JetStream answers."""
        self.starts += 1
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(  # noqa: ASYNC220, S603
                [
                    self.binary,
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-js",
                    "-sd",
                    str(self.folder / "jetstream"),
                    *self.args,
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nats-server exited at start-up:\n{self.log_text()}")
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                async with connected(self.url) as nc:
                    await nc.jetstream().account_info()
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"nats-server did not answer within {seconds} s:\n{self.log_text()}")

    async def stop(self, *, seconds: float = 30) -> None:
        """SIGTERM, as an operator stops it; wait until it has exited."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.process.wait, seconds)

    def kill(self) -> None:
        """Make sure it is gone (test clean-up)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[Client]:
    """One connection attempt, closed afterwards (raises at once if the server is away)."""
    nc = await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0,
        connect_timeout=2,
        error_cb=_quiet,
    )
    try:
        yield nc
    finally:
        await nc.close()


async def _quiet(error: Exception) -> None:
    """The default callback logs every refused connection with a traceback."""

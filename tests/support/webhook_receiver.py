"""A real HTTP receiver of the ledger's notifications, served in the test's event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post
from litestar.params import FromPath

from tests.support.servers import bind_free_port, serving


class Received(msgspec.Struct, frozen=True):
    """One request as the receiver got it: the raw body, exactly as sent."""

    path: str
    body: str
    signature: str | None
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return msgspec.json.decode(self.body)  # type: ignore[no-any-return]


class Receiver:
    """Records every POST to ``/<name>``; answers 503 to the first ``fail_first[name]``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answered: list[tuple[str, int]] = []
        self.fail_first: dict[str, int] = {}
        self.failing: set[str] = set()
        self.base_url = ""

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def at(self, name: str) -> list[Received]:
        """What ``/<name>`` accepted (2xx), in arrival order."""
        return [r for r in self.received if r.path == name]

    async def wait_for(self, name: str, count: int, seconds: float = 15) -> list[Received]:
        """Until ``/<name>`` has accepted ``count`` requests (or fail after ``seconds``)."""
        deadline = time.monotonic() + seconds
        while len(self.at(name)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"/{name} accepted {len(self.at(name))} of {count} within {seconds} s"
                )
            await asyncio.sleep(0.02)
        return self.at(name)

    def app(self) -> Litestar:
        @post("/{name:str}", status_code=200)
        async def receive(name: FromPath[str], request: Request) -> Response[str]:
            body = (await request.body()).decode()
            refused = self.fail_first.get(name, 0)
            if name in self.failing or refused > 0:
                self.fail_first[name] = refused - 1
                self.answered.append((name, 503))
                return Response("down for maintenance", status_code=503)
            self.answered.append((name, 200))
            self.received.append(
                Received(name, body, request.headers.get("ledger-signature"), time.monotonic())
            )
            return Response("ok")

        return Litestar(route_handlers=[receive], logging_config=None)


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    """A receiver on a free loopback port for the block's duration."""
    receiver = Receiver()
    async with serving(receiver.app(), bind_free_port()) as base_url:
        receiver.base_url = base_url
        yield receiver

"""Serve an ASGI app on a free loopback port inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


def bind_free_port() -> socket.socket:
    """A listening-ready socket on 127.0.0.1 with a port the kernel chose."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that name it,
    # and without it every request after a connection's first waits ~40 ms (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(app: Any, sock: socket.socket, *more: socket.socket) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on ``sock`` (and ``more``) until the block ends; yield the
    base URL of ``sock``."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock, *more]))
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("the server stopped during start-up")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        for each in (sock, *more):
            each.close()

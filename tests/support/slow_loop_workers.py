"""Two workers of ``api.workers.serve_workers`` whose event loop is slow to be made.

``python -m tests.support.slow_loop_workers MARKER``: each worker touches
``MARKER.<pid>`` once uvicorn has made its coroutine and is making the loop to run it
in, then waits there until ``MARKER.go`` exists, so a test can stop the server in
between. The handlers are ``ledger serve``'s: SIGTERM exits 0, a Ctrl-C before the
workers listen says "Aborted!" and exits 130.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn


class _State(dict[str, Any]):
    """What ``serve_workers`` sets and reads on an app's ``state``."""


async def quick_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _slow_loop_factory(marker: str) -> Callable[[], asyncio.AbstractEventLoop]:
    def make() -> asyncio.AbstractEventLoop:
        Path(f"{marker}.{os.getpid()}").touch()
        while not Path(f"{marker}.go").exists():
            time.sleep(0.01)
        return asyncio.new_event_loop()

    return make


def main() -> int:
    from api.workers import serve_workers

    marker = sys.argv[1]
    # uvicorn makes its coroutine, then asks for the loop factory, then makes the loop.
    uvicorn.Config.get_loop_factory = lambda _: _slow_loop_factory(marker)  # type: ignore[method-assign]

    def stopped(signum: int, _: object) -> None:  # as `ledger serve`'s (api/cli_serve.py)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stopped)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the parent's "stopping…"
    quick_app.state = _State()  # type: ignore[attr-defined]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.set_inheritable(True)
    try:
        return serve_workers(quick_app, [sock], 2, lambda url, _: print("ready", url, flush=True))
    except KeyboardInterrupt:
        print("Aborted!", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Two workers of ``api.workers.serve_workers`` whose app takes seconds to start.

``python -m tests.support.slow_start_workers MARKER``: each worker touches
``MARKER.<pid>`` when its start-up begins, so a test can stop the server while the
workers are still starting; the process exits with ``serve_workers``'s code.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Any


class _State(dict[str, Any]):
    """What ``serve_workers`` sets and reads on an app's ``state``."""


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                os.close(os.open(f"{sys.argv[1]}.{os.getpid()}", os.O_CREAT | os.O_WRONLY))
                await asyncio.sleep(5)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def main() -> int:
    from api.workers import serve_workers

    slow_app.state = _State()  # type: ignore[attr-defined]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.set_inheritable(True)
    return serve_workers(slow_app, [sock], 2, lambda url, _: print("ready", url, flush=True))


if __name__ == "__main__":
    sys.exit(main())

"""One request through the HTTP edge in process, for the edge's unit tests."""

from __future__ import annotations

from typing import Any

from litestar.types import ASGIApp

from api.edge import answered_requests


async def messages_sent(
    app: ASGIApp, method: str, path: str = "/v1/credits"
) -> list[dict[str, Any]]:
    """The ASGI messages the edge sends for one body-less request to ``app``."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    await answered_requests(app)(scope, receive, send)  # type: ignore[arg-type]
    return sent

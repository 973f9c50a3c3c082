"""The edge calls Litestar's router itself and has Litestar's exception middleware answer
an error (api/edge.py): the same answers as with the middleware around the router."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar import Litestar, get
from litestar.config.cors import CORSConfig
from litestar.exceptions import LitestarException, NotAuthorizedException
from litestar.types import Receive, Scope, Send

from api.app import create_app
from api.edge import _router_within, answered_requests
from api.errors import EXCEPTION_HANDLERS
from api.settings import Settings


def test_the_ledgers_edge_calls_the_router_itself() -> None:
    app = create_app(Settings())
    litestar_made = Litestar(route_handlers=[], exception_handlers=EXCEPTION_HANDLERS)
    # What the ledger's edge wraps is what Litestar makes: its middleware around the router.
    assert _router_within(litestar_made.asgi_handler) is litestar_made.asgi_router
    assert app.asgi_handler.__name__ == "edge"  # type: ignore[attr-defined]


def test_more_around_the_router_is_called_whole() -> None:
    app = Litestar(route_handlers=[], cors_config=CORSConfig(allow_origins=["https://a.example"]))
    assert _router_within(app.asgi_handler) is None


@get("/refused", sync_to_thread=False)
def refused() -> None:
    raise NotAuthorizedException


@get("/broken", sync_to_thread=False)
def broken() -> None:
    raise RuntimeError("a bug")


async def _answer(app: Litestar, path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], msgspec.json.decode(body)


def _apps() -> tuple[Litestar, Litestar]:
    """The same routes with the edge around Litestar's middleware (as before) and in its place."""
    whole, edged = (
        Litestar(route_handlers=[refused, broken], exception_handlers=EXCEPTION_HANDLERS)
        for _ in range(2)
    )
    whole.asgi_handler = answered_requests(_AroundOnly(whole.asgi_handler))
    edged.asgi_handler = answered_requests(edged.asgi_handler)
    return whole, edged


class _AroundOnly:
    """An app that calls another: the edge calls it whole (as with CORS)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@pytest.mark.parametrize(
    ("path", "method"),
    [("/refused", "GET"), ("/broken", "GET"), ("/nowhere", "GET"), ("/refused", "DELETE")],
)
async def test_errors_are_answered_as_litestars_middleware_answers_them(
    path: str, method: str
) -> None:
    whole, edged = _apps()
    assert await _answer(edged, path, method) == await _answer(whole, path, method)


async def test_an_error_after_the_answer_started_is_raised_as_litestar_raises_it() -> None:
    async def half_answered(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("cut off")

    app = Litestar(route_handlers=[])
    app.asgi_router = half_answered  # type: ignore[assignment]
    app.asgi_handler.app = half_answered  # type: ignore[attr-defined]
    app.asgi_handler = answered_requests(app.asgi_handler)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(LitestarException, match="after response started") as raised:
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert isinstance(raised.value.__cause__, RuntimeError)

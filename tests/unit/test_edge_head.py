"""HEAD at the edge (api/edge.py), as the server is handed it: the messages themselves.

An HTTP client cannot show a HEAD answer's body (httpx drops it, as RFC 9110 says a client
does), so the e2e tests pass whether or not the edge sends one."""

from __future__ import annotations

from typing import Any

from litestar.types import Receive, Scope, Send

from tests.support.edge import messages_sent

_BODY = b'{"balance": 100}'


async def _get_only(scope: Scope, _: Receive, send: Send) -> None:
    """A route answering GET, and 405 naming GET to any other method."""
    if scope["method"] != "GET":  # type: ignore[typeddict-item]  # an HTTP scope
        await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"GET")]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    headers = [(b"content-length", str(len(_BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY, "more_body": False})


async def _answer(method: str) -> list[dict[str, Any]]:
    return await messages_sent(_get_only, method)  # type: ignore[arg-type]


async def test_head_is_answered_as_get_with_its_headers_and_no_body() -> None:
    got_start, got_body = await _answer("GET")
    head_start, head_body = await _answer("HEAD")

    assert (got_start["status"], head_start["status"]) == (200, 200)
    assert dict(head_start["headers"])[b"content-length"] == str(len(_BODY)).encode()
    assert got_body["body"] == _BODY
    assert head_body["body"] == b""


async def test_a_405_names_head_wherever_it_names_get() -> None:
    start, _ = await _answer("DELETE")

    assert start["status"] == 405
    assert dict(start["headers"])[b"allow"] == b"GET, HEAD"

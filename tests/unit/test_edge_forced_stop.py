"""The edge's answer to a request a forced stop cut off (api/edge.py): a 503 of its own,
through the same send wrapper as every other answer, so a HEAD gets it without a body and
no answer claims a position it may not stand at."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar.types import Receive, Scope, Send

from api.edge import answered_requests
from ledger.unit_of_work import _answer_positions, answer_replayed


async def _cut_off(_: Scope, __: Receive, ___: Send) -> None:
    """A command that committed (its position noted) or found its first answer, then a
    second Ctrl-C."""
    collected = _answer_positions.get()
    assert collected is not None  # the edge's
    collected.note(42)
    answer_replayed.set(True)  # its first answer, given again
    raise asyncio.CancelledError


async def _answer(method: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/v1/credits", "headers": []}
    await answered_requests(_cut_off)(scope, receive, send)  # type: ignore[arg-type]
    return sent


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_request_a_forced_stop_cut_off_is_a_503_at_no_position(method: str) -> None:
    start, body = await _answer(method)

    assert start["status"] == 503
    headers = {name.lower(): value for name, value in start["headers"]}
    assert headers[b"retry-after"] == b"1"
    assert b"ledger-position" not in headers
    assert b"idempotent-replayed" not in headers  # no answer the ledger gave
    assert b"x-request-id" in headers
    assert (body["body"] == b"") is (method == "HEAD")
    assert body["more_body"] is False

"""The edge's answer to a request a forced stop cut off (api/edge.py): a 503 of its own,
through the same send wrapper as every other answer, so a HEAD gets it without a body and
no answer claims a position it may not stand at."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar.types import Receive, Scope, Send

from ledger.request_scope import current_scope
from ledger.unit_of_work import mark_replayed
from tests.support.edge import messages_sent


async def _cut_off(_: Scope, __: Receive, ___: Send) -> None:
    """A command that committed (its position noted) or found its first answer, then a
    second Ctrl-C."""
    collected = current_scope.get()
    assert collected is not None  # the edge's
    collected.note(42)
    mark_replayed()  # its first answer, given again
    raise asyncio.CancelledError


async def _answer(method: str) -> list[dict[str, Any]]:
    return await messages_sent(_cut_off, method)  # type: ignore[arg-type]


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

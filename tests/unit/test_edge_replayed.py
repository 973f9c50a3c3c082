"""``Idempotent-Replayed: true`` on the answers the ledger gave again, and only on those:
the edge reads it from the request's scope (ledger/request_scope.py), where the ledger
marks a replay (``mark_replayed``)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.types import Receive, Scope, Send

from ledger.unit_of_work import mark_replayed
from tests.support.edge import messages_sent


async def _ok(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


async def _replayed(_: Scope, __: Receive, send: Send) -> None:
    mark_replayed()
    await _ok(send)


async def _replayed_in_a_task(_: Scope, __: Receive, send: Send) -> None:
    # A command run in a task of its own (shielded from the request's cancellation, say)
    # marks the request's answer all the same, as it notes its position.
    await asyncio.create_task(_mark())
    await _ok(send)


async def _mark() -> None:
    mark_replayed()


async def _decided_now(_: Scope, __: Receive, send: Send) -> None:
    await _ok(send)


def _headers(sent: list[dict[str, Any]]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in sent[0]["headers"]}


async def test_a_replayed_answer_says_so() -> None:
    sent = await messages_sent(_replayed, "GET")  # type: ignore[arg-type]
    assert _headers(sent)[b"idempotent-replayed"] == b"true"


async def test_a_replay_marked_in_a_task_the_request_started_says_so() -> None:
    sent = await messages_sent(_replayed_in_a_task, "GET")  # type: ignore[arg-type]
    assert _headers(sent)[b"idempotent-replayed"] == b"true"


async def test_the_next_request_in_the_same_context_starts_unmarked() -> None:
    await messages_sent(_replayed, "GET")  # type: ignore[arg-type]
    sent = await messages_sent(_decided_now, "GET")  # type: ignore[arg-type]
    assert b"idempotent-replayed" not in _headers(sent)

"""The event loop every command runs on: uvloop's, as the server's (uvicorn picks it).

``asyncio.run`` makes asyncio's own loop, whose socket writes and selector were most
of the projector's profile under the spend load (a round trip per statement of each
batch). Measured on the projector catching up 60,000 events in batches of 40
(PostgreSQL 15 over TCP, six interleaved pairs, a process each): 0.87-1.11 CPU
seconds on uvloop against 1.00-1.39 on asyncio's loop, 1.38-1.72 s against 1.62-2.05.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

import uvloop

T = TypeVar("T")


class _Kept(Generic[T]):
    """Where the coroutine's result waits for the caller, out of the main task's sight."""

    __slots__ = ("value",)
    value: T


async def _keeping(main: Coroutine[Any, Any, T], kept: _Kept[T]) -> None:
    kept.value = await main


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on a uvloop event loop.

    The main task ends with no result of its own: asyncio's Runner, when it puts Ctrl-C's
    handler back, looks the old one up by ``signal.getsignal``, which turns the handler into
    text in passing (it is no ``Handlers`` member): its repr, the main task's, and with it
    the task's result, whole. An audit worker's result is its replayed part, every
    account's figures: 0.3-0.5 s of its CPU on 1,000,000 events went into that text.
    """
    kept: _Kept[T] = _Kept()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_keeping(main, kept))
    return kept.value

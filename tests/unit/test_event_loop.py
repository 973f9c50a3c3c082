"""The commands' event loop (ledger/event_loop.py) is uvloop's, and behaves as ``asyncio.run``."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from ledger import event_loop


async def loop_kind() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


async def failing() -> None:
    await asyncio.sleep(0)
    raise LookupError("from the coroutine")


def test_a_command_runs_on_uvloop_and_gets_the_coroutine_s_result() -> None:
    assert event_loop.run(loop_kind()) is uvloop.Loop


def test_an_error_in_the_coroutine_reaches_the_caller() -> None:
    with pytest.raises(LookupError, match="from the coroutine"):
        event_loop.run(failing())

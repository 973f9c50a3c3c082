"""Waiting in a test for something another task or process does."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(
    check: Callable[[], Any],
    seconds: float = 15,
    *,
    what: str = "",
    explain: Callable[[], str] | None = None,
) -> None:
    """Wait until ``check()`` (or what it returns, when awaitable) is true.

    Fails naming ``what`` is awaited, with ``explain()`` (a process's log, say) below.
    """
    deadline = time.monotonic() + seconds
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            message = f"{what}: not within {seconds} s" if what else f"not so within {seconds} s"
            raise AssertionError(message if explain is None else f"{message}\n{explain()}")
        await asyncio.sleep(0.02)

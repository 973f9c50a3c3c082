"""Waiting in a test for something another task or process does."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(check: Callable[[], Any], seconds: float = 15) -> None:
    """Wait until ``check()`` (or what it returns, when awaitable) is true."""
    deadline = time.monotonic() + seconds
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {seconds} s")
        await asyncio.sleep(0.02)

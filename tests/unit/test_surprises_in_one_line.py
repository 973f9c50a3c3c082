"""The background loops say an error nobody expected in one line (its type, its message and
where in this code it was raised), not with a traceback at each try: the dispatcher looked
at its outbox, and the reconciler ran, every few seconds, a traceback each time. The
traceback goes to DEBUG."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from api.reconcile import PeriodicReconciler
from ledger.notifications.dispatcher import Dispatcher
from ledger.surprises import in_one_line
from tests.support.waiting import until


def _raise_key_error() -> None:
    grants: dict[str, int] = {}
    grants["g_1"] += 1


def test_an_error_in_one_line_names_its_type_message_and_place() -> None:
    try:
        _raise_key_error()
    except KeyError as error:
        said = in_one_line(error)

    assert said.startswith("KeyError: 'g_1' (at tests/unit/test_surprises_in_one_line.py:")
    assert in_one_line(ValueError("two\n  lines")) == "ValueError: two lines"
    assert in_one_line(TimeoutError()) == "TimeoutError"


def _one_line_then_debug(caplog: pytest.LogCaptureFixture, starts: str) -> None:
    [line, *_] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.levelno == logging.ERROR
    assert line.exc_info is None
    message = line.getMessage()
    assert message.startswith(f"{starts}: AttributeError: "), message
    assert "\n" not in message
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


def _said(caplog: pytest.LogCaptureFixture) -> bool:
    return any(r.levelno >= logging.WARNING for r in caplog.records)


async def test_a_surprise_of_the_dispatcher_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ledger.notifications.dispatcher")
    stop = asyncio.Event()
    # No pool: its look at the outbox fails as no database's error would.
    running = asyncio.create_task(Dispatcher(None, poll_seconds=0.01).run(stop))  # type: ignore[arg-type]
    try:
        await until(lambda: _said(caplog), 10, what="the dispatcher's line")
    finally:
        stop.set()
        await running

    _one_line_then_debug(caplog, "dispatcher failed to look at the outbox (will retry)")


async def test_a_surprise_of_the_reconciler_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="api.reconcile")
    services: Any = SimpleNamespace(pool=None)
    reconciler = PeriodicReconciler(services, lookup=None, interval=0.01)  # type: ignore[arg-type]
    reconciler.start()
    try:
        await until(lambda: _said(caplog), 10, what="the reconciler's line")
    finally:
        await reconciler.stop()

    _one_line_then_debug(caplog, "reconcile: run failed (will try again)")

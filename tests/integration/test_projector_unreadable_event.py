"""A stored event whose state does not decode stops the projector at it: said in one line
naming the event, the process kept up (its dispatcher shares it), not a traceback and a
restart every few seconds that read the same event again."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from projections.runner import Projector
from tests.conftest import IsolatedDatabase
from tests.support.cli import ledger
from tests.support.ledger import open_account
from tests.support.waiting import until


async def test_an_event_that_cannot_be_read_is_named_in_one_line_and_the_projector_stays_up(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="projections.runner")
    await open_account(isolated_db.ledger(), "acct_unreadable", 100)
    admin = await asyncpg.connect(isolated_db.url)
    try:
        # Written past the store's checks, as a bad migration or a hand-made row would be.
        position = await admin.fetchval(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               SELECT originator_id, 2, 'ledger.domain.events:CreditsSpent', '{"bad": 1}', '\\x00'
               FROM stored_events WHERE originator_version = 1
               RETURNING notification_id"""
        )
    finally:
        await admin.close()

    stop = asyncio.Event()
    running = asyncio.create_task(Projector(isolated_db.store, isolated_db.url).run(stop))
    try:

        def said() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "cannot be read" in r.getMessage()]

        await until(lambda: said() or running.done(), 30, what="the projector's error line")
        assert not running.done()
    finally:
        stop.set()
        await running

    [line] = said()
    message = line.getMessage()
    assert f"position {position} (CreditsSpent" in message
    assert "ValidationError" in message
    assert "\n" not in message
    assert line.exc_info is None


async def test_a_projector_that_fails_on_an_event_it_decodes_says_why_in_one_line(
    isolated_db: IsolatedDatabase,
) -> None:
    """A view that fails on an event (a grant voided that was never granted, written by
    hand) ended `ledger project` with a traceback, restarted by `ledger serve` every few
    seconds: now one line naming the error and where, and exit 1 (its restart starts from
    the views as committed)."""
    await open_account(isolated_db.ledger(), "acct_void_unknown", 100)
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               SELECT originator_id, 2, 'ledger.domain.events:GrantVoided',
                      '{"grant_id": "g_never", "lapsed": 1, "reason": "x",
                        "timestamp": "2026-11-01T00:00:00+00:00"}', '\\x00'
               FROM stored_events WHERE originator_version = 1"""
        )
    finally:
        await admin.close()

    result = await ledger(isolated_db.url, "project", "--no-dispatch", seconds=60)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [said] = [line for line in result.stderr.splitlines() if "projector stopped" in line]
    assert said.startswith("Error: projector stopped: KeyError: 'g_never' (at projections/")


async def test_a_projector_stopped_at_an_unreadable_event_says_so_once_and_when_it_ends(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Its error line came again at every try (every 30 s) for as long as the event stayed,
    where a failing batch, the sweeper and the dispatcher say a failure once, every 10
    minutes while it lasts, and when it ends (ledger/failing_loop.py)."""
    await open_account(isolated_db.ledger(), "acct_unreadable_again", 100)
    admin = await asyncpg.connect(isolated_db.url)

    def said(level: int) -> list[str]:
        ours = [r for r in caplog.records if r.name == "projections.runner"]
        return [r.getMessage() for r in ours if r.levelno == level]

    caplog.set_level(logging.DEBUG, logger="projections.runner")
    projector = Projector(isolated_db.store, isolated_db.url, stuck_retry_seconds=0.05)
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        position = await admin.fetchval(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               SELECT originator_id, 2, 'ledger.domain.events:CreditsSpent', '{"bad": 1}', '\\x00'
               FROM stored_events WHERE originator_version = 1
               RETURNING notification_id"""
        )
        running = asyncio.create_task(projector.run(stop))
        await until(
            lambda: len([m for m in said(logging.DEBUG) if "cannot be read" in m]) >= 3,
            30,
            what="three tries at the unreadable event",
        )
        # Mended by hand, as an operator would (past the store's append-only trigger).
        await admin.execute("SET session_replication_role = replica")
        await admin.execute("DELETE FROM stored_events WHERE notification_id = $1", position)
        await until(
            lambda: any("recovered" in m for m in said(logging.WARNING)), 30, what="recovery"
        )
    finally:
        stop.set()
        if running is not None:
            await running
        await admin.close()

    [stopped] = said(logging.ERROR)
    assert stopped.startswith(f"projector stopped: event at position {position} "), stopped
    assert stopped.endswith("; said again every 10 minutes while it lasts"), stopped
    [recovered] = said(logging.WARNING)
    assert recovered.startswith("projector recovered: "), recovered

"""Reconciliation past a session whose stream cannot be loaded (a row written by hand)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg
import pytest

from ledger.domain.ids import checkout_stream_id
from ledger.ports import FoundCheckout
from ledger.reconcile import PendingCheckout, reconcile
from tests.conftest import IsolatedDatabase


class _NotAsked:
    """A provider no session of this test reaches: the first is unloadable, the second is
    not in the store."""

    async def look_up_checkout(self, session_id: str) -> FoundCheckout:
        raise AssertionError(f"asked about {session_id}")


def _pending(session_id: str) -> PendingCheckout:
    return PendingCheckout(
        session_id=session_id, account_id="acct_r", credits=100, created_at=datetime.now(UTC)
    )


async def test_a_session_that_cannot_be_loaded_is_passed_over_and_the_later_ones_reconciled(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Listed oldest first, such a session ended every run (the reconciler's, once an
    interval, and ``ledger stripe reconcile``'s) before any later purchase was asked about."""
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               VALUES ($1, 1, 'ledger.domain.events:CheckoutRequested',
                       '{"credits": "x"}', '\\x00')""",
            checkout_stream_id("cs_unreadable"),
        )
    finally:
        await admin.close()
    books = isolated_db.ledger()

    try:
        results = await reconcile(
            books, _NotAsked(), [_pending("cs_unreadable"), _pending("cs_never_recorded")]
        )
    finally:
        await books.uow.committer.stop()

    assert [(r.session_id, r.outcome) for r in results] == [
        ("cs_unreadable", "error"),
        ("cs_never_recorded", "settled"),
    ]
    assert results[0].detail.startswith("stream "), results[0].detail
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.getMessage().startswith("reconcile: cs_unreadable passed over: stream ")

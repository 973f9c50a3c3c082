"""The expiry sweeper against views that lag behind the store."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import pytest

from api import expiry
from api.expiry import ExpirySweeper
from audit.verify import verify
from ledger import failing_loop
from ledger.commands import GrantCredits, PlaceHold, SettleHold, SpendCredits
from ledger.domain.errors import HoldHasExpired
from ledger.domain.ids import account_stream_id
from ledger.handlers.account_stream import by_account
from ledger.unit_of_work import answer_positions
from projections.queries import Views
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up, stream_events
from tests.support.ledger import conflicts_given_up, open_account
from tests.support.times import UNJUDGED


async def test_a_full_batch_of_expiries_the_views_still_show_due_ends_the_sweep(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second sweep of holds whose expiry is recorded, but not yet projected, is answered
    from their settlements' claims: those answers are not expiries recorded now. Counted as
    such, a full batch of them swept again and again until the projector caught up (without
    it, for ever), and the grants due waited behind."""
    monkeypatch.setattr(expiry, "SWEEP_BATCH", 3)
    books = isolated_db.ledger()
    await open_account(books, "acct_sweeps", 1000)
    for n in range(4):
        await books.execute(
            PlaceHold(
                account_id="acct_sweeps",
                amount=10,
                expires_in_seconds=1,
                reason="",
                idempotency_key=f"h{n}",
            )
        )
    await books.execute(
        GrantCredits(
            account_id="acct_sweeps",
            amount=50,
            priority=50,
            expires_at=datetime.now(UTC) + timedelta(seconds=1),
            reason="",
            idempotency_key="g",
        )
    )
    await caught_up(isolated_db.store)
    await asyncio.sleep(1.05)

    try:
        swept = await asyncio.wait_for(ExpirySweeper(Views(isolated_db.pool), books).sweep(), 10)
    finally:
        await books.uow.committer.stop()

    # The first hold's expiry records every expiry due on its account, the grant's too (its
    # notifications count none of them); the rest of the batch, still shown due, is answered
    # from the claims, and the grant is found closed.
    assert swept == {"holds": 1, "grants": 0}
    account = await books.account("acct_sweeps", fresh=True)
    assert (len(account.holds), account.granted) == (0, 0)


async def test_an_account_that_stays_busy_leaves_the_other_accounts_expiries_swept(
    isolated_db: IsolatedDatabase,
) -> None:
    """The sweeper's commands take their turns on an account as requests do, and give one up
    after the wait for it (busy: ConcurrencyConflict). That ended the whole sweep, holds and
    grants of every account, with a traceback, each second the one account stayed busy; and
    each of that account's expiries due would wait for its turn again."""
    books = isolated_db.ledger()
    books.uow.locks.wait = 0.05  # the turn given up soon
    for account_id, holds in (("acct_busy", 3), ("acct_other", 1)):
        await open_account(books, account_id, 1000)
        for n in range(holds):
            await books.execute(
                PlaceHold(
                    account_id=account_id,
                    amount=10,
                    expires_in_seconds=1,
                    reason="",
                    idempotency_key=f"h_{account_id}_{n}",
                )
            )
        await books.execute(
            GrantCredits(
                account_id=account_id,
                amount=50,
                priority=50,
                expires_at=datetime.now(UTC) + timedelta(seconds=1),
                reason="",
                idempotency_key=f"g_{account_id}",
            )
        )
    await caught_up(isolated_db.store)
    await asyncio.sleep(1.05)

    busy = by_account(SettleHold(account_id="acct_busy", hold_id="any", outcome="expired"))
    given_up = conflicts_given_up()
    try:
        async with books.uow.locks.hold(busy):  # a command in flight on it, for long
            swept = await ExpirySweeper(Views(isolated_db.pool), books).sweep()
    finally:
        await books.uow.committer.stop()

    assert swept == {"holds": 1, "grants": 0}  # the hold's expiry recorded the grant's
    # Its turn waited for once in each sweep (holds, then grants), not once per expiry due.
    assert conflicts_given_up() - given_up == 2
    other = await books.account("acct_other", fresh=True)
    assert (len(other.holds), other.granted) == (0, 0)


async def test_a_busy_account_with_a_full_batch_due_leaves_the_other_accounts_swept(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiries due are listed soonest first, a batch at a time. When a whole batch was
    of one busy account, each was skipped, nothing was recorded and the sweep ended: the
    other accounts' expiries waited for as long as that account stayed busy."""
    monkeypatch.setattr(expiry, "SWEEP_BATCH", 2)
    books = isolated_db.ledger()
    books.uow.locks.wait = 0.05
    for account_id, holds in (("acct_busy", 3), ("acct_other", 1)):  # the busy one's due first
        await open_account(books, account_id, 1000)
        for n in range(holds):
            await books.execute(
                PlaceHold(
                    account_id=account_id,
                    amount=10,
                    expires_in_seconds=1,
                    reason="",
                    idempotency_key=f"h_{account_id}_{n}",
                )
            )
    await caught_up(isolated_db.store)
    await asyncio.sleep(1.05)

    busy = by_account(SettleHold(account_id="acct_busy", hold_id="any", outcome="expired"))
    try:
        async with books.uow.locks.hold(busy):
            swept = await ExpirySweeper(Views(isolated_db.pool), books).sweep()
    finally:
        await books.uow.committer.stop()

    assert swept == {"holds": 1, "grants": 0}
    other = await books.account("acct_other", fresh=True)
    assert other.holds == {}
    assert len((await books.account("acct_busy", fresh=True)).holds) == 3


@pytest.mark.parametrize("takes", ["spend", "hold"])
async def test_credits_a_hold_reserved_past_its_expiry_are_there_before_the_sweep(
    isolated_db: IsolatedDatabase, takes: str
) -> None:
    """A hold past its expiry is no longer open, whether or not the sweeper has come (it
    finds due holds in the views: a projector stopped, and they waited for it). A spend or
    a new hold that needed its credits was refused 402 meanwhile; it records the expiry
    first now, with the answer the sweeper's expiry would have, and then takes them."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_late", 100)
    held = await books.execute(
        PlaceHold(
            account_id="acct_late",
            amount=100,
            expires_in_seconds=60,
            reason="",
            idempotency_key="h1",
        )
    )
    now[0] += timedelta(seconds=60)
    try:
        if takes == "spend":
            answer = await books.execute(
                SpendCredits(account_id="acct_late", amount=100, reason="", idempotency_key="k")
            )
        else:
            answer = await books.execute(
                PlaceHold(
                    account_id="acct_late",
                    amount=100,
                    expires_in_seconds=60,
                    reason="",
                    idempotency_key="h2",
                )
            )
        assert (answer.held, answer.available) == ((0, 0) if takes == "spend" else (100, 0))
        with pytest.raises(HoldHasExpired):
            await books.execute(
                SettleHold(
                    account_id="acct_late", hold_id=held.hold_id, outcome="captured", amount=1
                )
            )
        assert (await books.hold("acct_late", held.hold_id)).status == "expired"
        version = (await books.account("acct_late", fresh=True)).version
        await books.execute(
            SettleHold(account_id="acct_late", hold_id=held.hold_id, outcome="expired")
        )
        assert (await books.account("acct_late", fresh=True)).version == version  # swept once
        await caught_up(isolated_db.store)
        assert (await verify(isolated_db.pool, max_time_skew=UNJUDGED)).findings == []
    finally:
        await books.uow.committer.stop()


async def test_a_release_past_the_holds_expiry_answers_and_records_its_expiry(
    isolated_db: IsolatedDatabase,
) -> None:
    """ "A release of an expired hold answers its expiry" (README): so it did once the sweeper
    had come; before, the release was recorded as a release (no ``hold.expired`` for the
    endpoints that asked for it), answered ``released``."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_late_release", 100)
    held = await books.execute(
        PlaceHold(
            account_id="acct_late_release",
            amount=40,
            expires_in_seconds=60,
            reason="",
            idempotency_key="h1",
        )
    )
    now[0] += timedelta(seconds=60)
    release = SettleHold(account_id="acct_late_release", hold_id=held.hold_id, outcome="released")
    try:
        shown = await books.hold("acct_late_release", held.hold_id)  # read before any sweep
        released = await books.execute(release)
        again = await books.execute(release)
        with pytest.raises(HoldHasExpired):
            await books.execute(
                SettleHold(
                    account_id="acct_late_release",
                    hold_id=held.hold_id,
                    outcome="captured",
                    amount=1,
                )
            )
    finally:
        await books.uow.committer.stop()

    assert (released.status, released.released, released.available) == ("expired", 40, 100)
    assert again == released
    assert shown == released  # the read showed what its expiry then recorded
    events = await stream_events(isolated_db.store, account_stream_id("acct_late_release"))
    assert [kind for kind, _ in events][-1] == "HoldExpired"


async def test_an_account_that_cannot_be_loaded_is_one_line_and_the_others_are_swept(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A hold due on an account whose stream holds a row that does not decode (written by
    hand) failed every sweep, once a second, with a traceback of the mapper's frames; and,
    listed soonest first, it ended each sweep before any other account's expiry was reached.
    """
    books = isolated_db.ledger()
    for account_id in ("acct_sweep_unreadable", "acct_sweep_fine"):  # due in this order
        await open_account(books, account_id, 1000)
        await books.execute(
            PlaceHold(
                account_id=account_id,
                amount=10,
                expires_in_seconds=1,
                reason="",
                idempotency_key="h",
            )
        )
    await caught_up(isolated_db.store)
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               VALUES ($1, 3, 'ledger.domain.events:CreditsSpent', '{"amount": "x"}', '\\x00')""",
            account_stream_id("acct_sweep_unreadable"),
        )
    finally:
        await admin.close()
    await asyncio.sleep(1.05)
    caplog.set_level(logging.DEBUG, logger="api.expiry")
    now = [1000.0]
    sweeper = ExpirySweeper(Views(isolated_db.pool), books, clock=lambda: now[0])

    def said() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno >= logging.WARNING]

    try:
        swept = await asyncio.wait_for(sweeper.sweep(), 10)
        fine = await books.account("acct_sweep_fine", fresh=True)
        first = said()
        for _ in range(3):  # the sweeps of the next seconds
            now[0] += 1
            await asyncio.wait_for(sweeper.sweep(), 10)
        meanwhile = said()
        now[0] += expiry.SAY_AGAIN_SECONDS
        await asyncio.wait_for(sweeper.sweep(), 10)
        an_hour_on = said()
    finally:
        await books.uow.committer.stop()

    assert swept == {"holds": 1, "grants": 0}
    assert fine.holds == {}
    [line] = first
    assert line.exc_info is None
    message = line.getMessage()
    assert message.startswith("expiry sweep passed over acct_sweep_unreadable: stream "), message
    assert "ValidationError: Expected `int`" in message
    assert message.endswith("(see `ledger audit verify`); said again hourly while it lasts")
    assert "\n" not in message
    # Said once, not once a second (at DEBUG meanwhile), and again an hour on.
    assert meanwhile == first
    assert [r.levelno for r in caplog.records if "passed over" in r.getMessage()] == [
        logging.ERROR,
        *[logging.DEBUG] * 3,
        logging.ERROR,
    ]
    assert len(an_hour_on) == 2


async def test_the_first_release_of_a_swept_hold_is_not_marked_replayed(
    isolated_db: IsolatedDatabase,
) -> None:
    """A release of a hold whose expiry was recorded before (by the sweeper, or first by
    another command on the account) answers that expiry. It was marked
    ``Idempotent-Replayed`` on its first request, which no answer was given before; a
    repeated expiry (the sweeper behind its views) is still one."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_swept_release", 100)
    held = [
        await books.execute(
            PlaceHold(
                account_id="acct_swept_release",
                amount=40,
                expires_in_seconds=seconds,
                reason="",
                idempotency_key=key,
            )
        )
        for key, seconds in (("swept", 60), ("expired by a spend", 120))
    ]

    async def marked(command: SettleHold | SpendCredits) -> tuple[Any, bool]:
        with answer_positions() as answered:
            answer = await books.execute(command)
        return answer, answered.replayed

    def settle(hold_id: str, outcome: Literal["released", "expired"]) -> SettleHold:
        return SettleHold(account_id="acct_swept_release", hold_id=hold_id, outcome=outcome)

    try:
        now[0] += timedelta(seconds=60)
        swept, swept_marked = await marked(settle(held[0].hold_id, "expired"))
        now[0] += timedelta(seconds=60)
        _, spend_marked = await marked(
            SpendCredits(account_id="acct_swept_release", amount=5, reason="", idempotency_key="s")
        )
        released, released_marked = await marked(settle(held[0].hold_id, "released"))
        released_other, other_marked = await marked(settle(held[1].hold_id, "released"))
        _, swept_again_marked = await marked(settle(held[0].hold_id, "expired"))
    finally:
        await books.uow.committer.stop()

    assert (swept_marked, spend_marked) == (False, False)
    assert released == swept  # the expiry, as recorded
    assert (released_other.status, released_other.released) == ("expired", 40)
    assert (released_marked, other_marked) == (False, False)
    assert swept_again_marked


async def test_a_release_of_an_expired_hold_and_its_repeats_answer_its_expiry_alike(
    isolated_db: IsolatedDatabase,
) -> None:
    """A release of a hold past its expiry answers the expiry as recorded, whether the
    sweeper recorded it before or the release records it now, and so does every repeat,
    none marked ``Idempotent-Replayed`` (what is recorded is the expiry, not the release).
    A release that recorded the expiry kept its claim as the release's, so its repeats were
    marked while those of a release of a swept hold were not: the same request, told two
    ways."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    account_id = "acct_expired_release"
    await open_account(books, account_id, 100)

    async def placed(key: str) -> str:
        hold = PlaceHold(
            account_id=account_id, amount=40, expires_in_seconds=60, reason="", idempotency_key=key
        )
        return str((await books.execute(hold)).hold_id)

    async def marked(hold_id: str, outcome: Literal["released", "expired"]) -> tuple[Any, bool]:
        settle = SettleHold(
            account_id=account_id, hold_id=hold_id, outcome=outcome, idempotency_key="k"
        )
        with answer_positions() as answered:
            answer = await books.execute(settle)
        return answer, answered.replayed

    try:
        swept = await placed("swept")
        now[0] += timedelta(seconds=60)
        expiry, _ = await marked(swept, "expired")  # the sweeper's
        released_swept = [await marked(swept, "released") for _ in range(2)]
        unswept = await placed("unswept")
        now[0] += timedelta(seconds=60)
        released_unswept = [await marked(unswept, "released") for _ in range(2)]
        shown = await books.hold(account_id, unswept)
    finally:
        await books.uow.committer.stop()

    assert released_swept == [(expiry, False)] * 2
    first, _ = released_unswept[0]
    assert (first.status, first.released, first.balance, first.available) == (
        "expired",
        40,
        100,
        100,
    )
    assert released_unswept == [(first, False)] * 2
    assert shown == first


async def test_a_sweep_failing_every_second_is_said_once_then_now_and_then_and_its_end(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Each sweep (one a second in every API process) logged "expiry sweep could not reach
    the database (will retry)" (or "failed") again for as long as the failure lasted, and
    nothing when it ended."""
    books = isolated_db.ledger()
    now = [1000.0]
    sweeper = ExpirySweeper(Views(isolated_db.pool), books, clock=lambda: now[0])
    admin = await asyncpg.connect(isolated_db.url)
    caplog.set_level(logging.DEBUG, logger="api.expiry")

    def said() -> list[str]:  # not another test's task collected meanwhile (asyncio's)
        ours = [r for r in caplog.records if r.name == "api.expiry"]
        return [r.getMessage() for r in ours if r.levelno >= logging.WARNING]

    try:
        await admin.execute("ALTER TABLE holds RENAME TO holds_away")
        for _ in range(5):  # the sweeps of five seconds
            await asyncio.wait_for(sweeper.sweep_and_say(), 10)
            now[0] += 1
        first = said()
        now[0] += failing_loop.SAY_AGAIN_SECONDS
        await asyncio.wait_for(sweeper.sweep_and_say(), 10)
        later = said()
        await admin.execute("ALTER TABLE holds_away RENAME TO holds")
        now[0] += 4
        await asyncio.wait_for(sweeper.sweep_and_say(), 10)
        await asyncio.wait_for(sweeper.sweep_and_say(), 10)
    finally:
        await admin.execute("ALTER TABLE IF EXISTS holds_away RENAME TO holds")
        await admin.close()
        await books.uow.committer.stop()

    [line] = first
    assert line.startswith("expiry sweep could not reach the database (will retry): "), line
    assert '"holds" does not exist' in line
    assert line.endswith("; said again every 10 minutes while it lasts")
    assert [r.levelno for r in caplog.records if "(will retry)" in r.getMessage()] == [
        logging.WARNING,
        *[logging.DEBUG] * 4,
        logging.WARNING,
    ]
    assert later == [line, line]
    assert said()[2:] == ["expiry sweep recovered: 6 tries failed over 609 s"]

"""Grants in the views, in the expiry sweeper and in ``ledger audit verify``."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from api.expiry import ExpirySweeper
from audit.verify import verify
from ledger.commands import (
    ExpireGrant,
    GrantCredits,
    PlaceHold,
    SettleHold,
    SpendCredits,
    VoidGrant,
)
from ledger.domain.account import CreditAccount
from ledger.domain.errors import GrantClosed
from ledger.domain.events import (
    CreditsGranted,
    CreditsSpent,
    GrantExpired,
    GrantVoided,
    HoldPlaced,
)
from ledger.domain.ids import account_stream_id
from ledger.handlers.grants import grant_id_for
from ledger.service import Ledger
from ledger.store.claims import request_fingerprint
from projections.queries import Views
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up
from tests.support.ledger import open_account, save
from tests.support.times import UNJUDGED

# Every audit here runs twice: replayed in this process, and split over two (--jobs 2).
pytestmark = pytest.mark.usefixtures("audit_jobs")

NOW = datetime.now(UTC).replace(microsecond=0)
"""The commands' time: an hour after it the first grant has expired, in every test run."""
ACCOUNT = "acct_grants"
STREAM = account_stream_id(ACCOUNT)


async def grant(
    books: Ledger, key: str, amount: int, priority: int, expires_in: timedelta | None
) -> str:
    given = await books.execute(
        GrantCredits(
            account_id=ACCOUNT,
            amount=amount,
            priority=priority,
            expires_at=None if expires_in is None else NOW + expires_in,
            reason=f"promo {key}",
            idempotency_key=key,
            at=NOW,
        )
    )
    return str(given.grant_id)


async def grants_history(db: IsolatedDatabase) -> tuple[Ledger, dict[str, str]]:
    """An allowance of 100; a grant expiring in an hour with a hold across its expiry, a
    grant spent and voided, one never touched; a spend decided after the first expired."""
    books = db.ledger()
    await open_account(books, ACCOUNT, 100)
    ids = {
        "soon": await grant(books, "soon", 200, 10, timedelta(hours=1)),
        "voided": await grant(books, "voided", 300, 20, None),
        "kept": await grant(books, "kept", 50, 90, None),
    }
    held = await books.execute(
        PlaceHold(
            account_id=ACCOUNT,
            amount=150,  # 100 of the allowance, 50 of "soon"
            expires_in_seconds=3 * 3600,
            reason="job",
            idempotency_key="hold",
            at=NOW,
        )
    )
    await books.execute(
        SpendCredits(
            account_id=ACCOUNT, amount=120, reason="a", idempotency_key="s1", at=NOW
        )  # 120 of "soon"
    )
    later = NOW + timedelta(hours=2)
    await books.execute(ExpireGrant(account_id=ACCOUNT, grant_id=ids["soon"], at=later))
    # "soon" has expired: 30 lapsed, 50 stay reserved by the hold; this spend takes "voided".
    await books.execute(
        SpendCredits(account_id=ACCOUNT, amount=40, reason="b", idempotency_key="s2", at=later)
    )
    await books.execute(
        SettleHold(
            account_id=ACCOUNT, hold_id=str(held.hold_id), outcome="captured", amount=120, at=later
        )
    )
    await books.execute(VoidGrant(account_id=ACCOUNT, grant_id=ids["voided"], reason="ended"))
    return books, ids


async def test_an_expired_grant_an_open_hold_reserves_lists_and_counts_what_it_reserves(
    isolated_db: IsolatedDatabase,
) -> None:
    """The contract: what a hold reserved of a grant "stays reserved until the hold settles".
    Until then the grant is listed ``expired`` with ``remaining`` the reserved credits, which
    ``granted`` (and so ``balance`` and ``held``) counts (docs/holds.md); then it lapses."""
    books = isolated_db.ledger()
    await open_account(books, ACCOUNT, 0)
    soon = await grant(books, "soon", 100, 10, timedelta(hours=1))
    held = await books.execute(
        PlaceHold(
            account_id=ACCOUNT,
            amount=60,
            expires_in_seconds=3 * 3600,
            reason="job",
            idempotency_key="hold",
            at=NOW,
        )
    )
    later = NOW + timedelta(hours=2)
    expired = await books.execute(ExpireGrant(account_id=ACCOUNT, grant_id=soon, at=later))
    await caught_up(isolated_db.store)
    views = Views(isolated_db.pool)

    [row] = await views.grants(STREAM, "all", limit=10)
    balance = await views.balance(ACCOUNT)
    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)

    assert (expired.status, expired.lapsed) == ("expired", 40)
    assert (row.status, row.remaining) == ("expired", 60)
    assert await views.grants(STREAM, "active", limit=10) == []
    assert balance is not None
    assert (balance.granted, balance.balance, balance.held, balance.available) == (60, 60, 60, 0)
    assert report.findings == []

    await books.execute(
        SettleHold(
            account_id=ACCOUNT, hold_id=str(held.hold_id), outcome="released", amount=0, at=later
        )
    )
    await caught_up(isolated_db.store)
    [row] = await views.grants(STREAM, "all", limit=10)
    balance = await views.balance(ACCOUNT)

    assert (row.status, row.remaining) == ("expired", 0)
    assert balance is not None
    assert (balance.granted, balance.balance, balance.held) == (0, 0, 0)
    assert (await verify(isolated_db.pool, max_time_skew=UNJUDGED)).findings == []


async def test_the_views_and_the_audit_agree_with_the_replay_of_grants(
    isolated_db: IsolatedDatabase,
) -> None:
    _, ids = await grants_history(isolated_db)
    await caught_up(isolated_db.store)
    views = Views(isolated_db.pool)

    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)
    balance = await views.balance(ACCOUNT)
    grants = {g.grant_id: g for g in await views.grants(STREAM, "all", limit=10)}
    active = await views.grants(STREAM, "active", limit=10)
    statement = await views.statement(ACCOUNT, limit=100)

    assert report.findings == []
    assert balance is not None
    # The capture of 120 took the allowance's 100 and 20 of the 50 "soon" reserved; the
    # other 30 lapsed with it, "soon" having expired.
    assert (balance.allowance_remaining, balance.granted, balance.topup_balance) == (0, 50, 0)
    assert (balance.held, balance.balance) == (0, 50)
    assert {k: (grants[g].status, grants[g].remaining) for k, g in ids.items()} == {
        "soon": ("expired", 0),
        "voided": ("voided", 0),
        "kept": ("active", 50),
    }
    assert [g.grant_id for g in active] == [ids["kept"]]
    assert statement[0].description == f"Grant voided: 260 lapsed ({ids['voided']})"
    assert (statement[0].granted_change, statement[0].granted_after) == (-260, 50)
    assert statement[1].description.endswith("30 of ended grants lapsed")
    assert statement[1].granted_change == -50
    assert sum(line.granted_change for line in statement) == 50


async def test_two_sweepers_record_a_due_grant_expiry_once(isolated_db: IsolatedDatabase) -> None:
    first, second = isolated_db.ledger(), isolated_db.ledger()
    await open_account(first, ACCOUNT, 0)
    due = await first.execute(
        GrantCredits(
            account_id=ACCOUNT,
            amount=70,
            priority=50,
            expires_at=datetime.now(UTC) + timedelta(seconds=1),
            reason="",
            idempotency_key="due",
        )
    )
    await asyncio.sleep(1.05)
    await caught_up(isolated_db.store)
    views = Views(isolated_db.pool)

    swept = await asyncio.gather(
        ExpirySweeper(views, first).sweep(), ExpirySweeper(views, second).sweep()
    )
    await caught_up(isolated_db.store)
    again = await ExpirySweeper(views, first).sweep()

    assert sorted(s["grants"] for s in swept) == [0, 1]
    assert again == {"holds": 0, "grants": 0}
    topics = await isolated_db.pool.fetch(
        "SELECT topic FROM stored_events WHERE originator_id = $1 ORDER BY originator_version",
        account_stream_id(ACCOUNT),
    )
    assert [t["topic"].rsplit(":", 1)[-1] for t in topics] == [
        "AccountOpened",
        "CreditsGranted",
        "GrantExpired",
    ]
    [row] = await views.grants(STREAM, "expired", limit=10)
    assert (row.grant_id, row.remaining) == (due.grant_id, 0)
    assert (await verify(isolated_db.pool, max_time_skew=UNJUDGED)).findings == []


async def test_a_void_after_the_expiry_is_refused_even_before_the_sweeper_records_it(
    isolated_db: IsolatedDatabase,
) -> None:
    # The contract: 409 once the grant has expired. A void then recorded it as voided (no
    # grant.expired notification, the wrong status in the list) instead of refusing.
    now = [NOW]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, ACCOUNT, 0)
    ended = await grant(books, "ended", 80, 50, timedelta(hours=1))
    now[0] = NOW + timedelta(hours=1)  # the grant given first: a stream's times never go back

    with pytest.raises(GrantClosed):
        await books.execute(VoidGrant(account_id=ACCOUNT, grant_id=ended, reason="late"))

    expired = await books.execute(ExpireGrant(account_id=ACCOUNT, grant_id=ended))
    assert (expired.status, expired.lapsed) == ("expired", 80)


async def test_the_audit_flags_a_spend_of_an_expired_grant_or_of_more_than_a_grant_had(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    await open_account(books, ACCOUNT, 0)
    soon = await grant(books, "soon", 100, 10, timedelta(hours=1))
    small = await grant(books, "small", 10, 20, None)
    account: CreditAccount = await books.account(ACCOUNT, fresh=True)

    # What a buggy writer would record: spends the domain refuses to decide.
    account.trigger_event(
        CreditsSpent,
        timestamp=NOW + timedelta(hours=2),
        amount=5,
        from_allowance=0,
        from_topup=0,
        reason="late",
        from_grants={soon: 5},
    )
    account.trigger_event(
        CreditsSpent,
        timestamp=NOW,
        amount=15,
        from_allowance=0,
        from_topup=0,
        reason="greedy",
        from_grants={small: 15},
    )
    await save(books, account)

    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)

    found = {f.kind: f for f in report.findings}
    assert set(found) == {"expired-grant-used", "grant-overdrawn"}
    assert found["expired-grant-used"].version == 4
    assert f"took from grant {soon}" in found["expired-grant-used"].detail
    assert found["grant-overdrawn"].version == 5
    assert f"took more than grant {small} had: -5 of it left" in found["grant-overdrawn"].detail


async def test_the_audit_flags_a_closed_grant_that_keeps_credits_no_hold_reserves(
    isolated_db: IsolatedDatabase,
) -> None:
    """What a close recorded as lapsed was judged by nothing: a void that let nothing lapse
    left the grant's credits in the balance, and every view agreed with the replay."""
    books = isolated_db.ledger()
    await open_account(books, ACCOUNT, 0)
    voided = await grant(books, "voided", 300, 10, None)
    expired = await grant(books, "expired", 100, 20, timedelta(hours=1))
    account: CreditAccount = await books.account(ACCOUNT, fresh=True)

    # What an insider (or a buggy writer) would record: closes that keep the grant's credits.
    account.trigger_event(GrantVoided, grant_id=voided, lapsed=0, reason="ended")
    account.trigger_event(
        GrantExpired, timestamp=NOW + timedelta(hours=2), grant_id=expired, lapsed=40
    )
    await save(books, account)

    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)

    found = [(f.kind, f.version, f.detail) for f in report.findings]
    assert found == [
        ("closed-grant-balance", 4, f"grant {voided} is voided and keeps 300 credits no open "
         "hold reserves: they should have lapsed"),
        ("closed-grant-balance", 5, f"grant {expired} is expired and keeps 60 credits no open "
         "hold reserves: they should have lapsed"),
    ]  # fmt: skip


async def test_the_audit_flags_a_grant_granted_again_under_its_id(
    isolated_db: IsolatedDatabase,
) -> None:
    """The account refuses a grant id it has, open or closed; appended anyway, the grant
    started over from the new amount and what the first had left stayed in ``granted``,
    held by no grant: a balance that could be spent from top-ups it never had."""
    books = isolated_db.ledger()
    await open_account(books, ACCOUNT, 0)
    first = await grant(books, "first", 1000, 10, None)
    ended = await grant(books, "ended", 50, 20, None)
    await books.execute(
        SpendCredits(account_id=ACCOUNT, amount=900, reason="work", idempotency_key="s1", at=NOW)
    )
    await books.execute(VoidGrant(account_id=ACCOUNT, grant_id=ended, reason="ended", at=NOW))
    account: CreditAccount = await books.account(ACCOUNT, fresh=True)
    for grant_id, amount in ((first, 1000), (ended, 50)):
        account.trigger_event(
            CreditsGranted,
            grant_id=grant_id,
            amount=amount,
            priority=10,
            expires_at=None,
            reason="again",
        )
    await save(books, account)

    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)

    assert [(f.kind, f.version, f.detail) for f in report.findings] == [
        (
            "grant-granted-twice",
            6,
            f"grant {first} was granted 1000 again while active with 100 left",
        ),
        ("grant-granted-twice", 7, f"grant {ended} was granted 50 again while closed"),
    ]
    await books.uow.committer.stop()


_FIRST, _LAPSING = grant_id_for(ACCOUNT, "first"), grant_id_for(ACCOUNT, "lapsing")


@pytest.mark.parametrize(
    ("kind", "fields", "takes"),
    [
        (
            CreditsSpent,
            {"amount": 150, "from_allowance": 100, "from_topup": 0, "reason": "x",
             "from_grants": {_LAPSING: 50}},
            f"100, {{'{_FIRST}': 50}} and 0",
        ),
        (
            CreditsSpent,
            {"amount": 50, "from_allowance": 0, "from_topup": 0, "reason": "x",
             "from_grants": {_FIRST: 50}},
            "50, {} and 0",
        ),
        (
            HoldPlaced,
            {"hold_id": "hold_x", "amount": 120, "from_allowance": 100, "from_topup": 20,
             "reason": "x", "expires_at": (NOW + timedelta(hours=3)).isoformat(),
             "from_grants": {}},
            f"100, {{'{_FIRST}': 20}} and 0",
        ),
    ],
    ids=["grants-out-of-order", "a-grant-before-the-allowance", "top-ups-before-a-grant"],
)  # fmt: skip
async def test_the_audit_flags_a_spend_or_hold_that_took_its_buckets_out_of_burn_order(
    isolated_db: IsolatedDatabase, kind: type, fields: dict[str, Any], takes: str
) -> None:
    """The allowance, then grants by priority, expiry and age, then top-ups: a split in
    another order, its parts adding up, none past what a bucket had free, passed. Burning a
    grant about to lapse in place of one that lasts (or the allowance, which lapses at the
    reset, left for later) keeps credits the rule spends; an insider's append takes any."""
    books = isolated_db.ledger()
    await open_account(books, ACCOUNT, 100)
    await grant(books, "first", 100, 10, None)
    await grant(books, "lapsing", 100, 50, timedelta(hours=1))
    account: CreditAccount = await books.account(ACCOUNT, fresh=True)
    assert list(account.grants) == [_FIRST, _LAPSING]

    account.trigger_event(kind, **fields)
    await save(books, account)

    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)

    what = "hold" if kind is HoldPlaced else "spend"
    assert [(f.kind, f.version, f.detail) for f in report.findings] == [
        (
            "burn-order",
            4,
            f"a {what} of {fields['amount']} took {fields['from_allowance']} from the "
            f"allowance, {fields['from_grants']!r} from grants and {fields['from_topup']} from "
            "top-ups; the burn order (the free allowance, then grants by priority, expiry and "
            f"age, then top-ups) takes {takes}",
        )
    ]


async def test_the_audit_finds_a_grants_view_that_disagrees(isolated_db: IsolatedDatabase) -> None:
    _, ids = await grants_history(isolated_db)
    await caught_up(isolated_db.store)
    await isolated_db.pool.execute(
        "UPDATE grants SET remaining = 49 WHERE grant_id = $1", ids["kept"]
    )
    await isolated_db.pool.execute("UPDATE balances SET granted = 0")

    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)

    assert sorted(f.kind for f in report.findings) == ["balances-view", "grants-view"]
    details = " ".join(f.detail for f in report.findings)
    assert f"grant {ids['kept']}: remaining is 49 in the view, 50 replayed" in details
    assert "granted is 0 in the view, 50 replayed" in details


async def test_the_audit_compares_every_column_of_a_grant_the_expiry_worker_reads(
    isolated_db: IsolatedDatabase,
) -> None:
    """Amount, priority, expiry, account and reason were not compared: a grant moved to
    another account or never to expire passed (an audit review); nor when it was granted and
    closed (the next), nor its position, which the list of grants pages on."""
    _, ids = await grants_history(isolated_db)
    await caught_up(isolated_db.store)
    await isolated_db.pool.execute(
        """UPDATE grants SET amount = 1, priority = 99, expires_at = '2000-01-01Z', reason = 'x',
                  stream_id = gen_random_uuid(), granted_at = '2000-01-01Z', closed_at = now(),
                  position = position + 1
           WHERE grant_id = $1""",
        ids["kept"],
    )

    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)

    changed = sorted(f.detail.split(" (view at")[0] for f in report.findings)
    assert [d.split(": ", 1)[1].split(" is ")[0] for d in changed] == [
        "amount",
        "closed_at",
        "expires_at",
        "granted_at",
        "position",
        "priority",
        "reason",
        "stream_id",
    ]
    assert {f.kind for f in report.findings} == {"grants-view"}


async def test_a_sweeper_that_cannot_reach_the_database_says_so_in_one_line(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """As the projector and the dispatcher do: a database error is a warning line with the
    error, not a traceback each second; the sweeper keeps trying (saying so at DEBUG)."""
    pool = await asyncpg.create_pool(isolated_db.url, min_size=1, max_size=1)
    await pool.close()  # every query now fails as it would with the database away
    sweeper = ExpirySweeper(Views(pool), isolated_db.ledger(), interval=0.01)

    def swept() -> list[logging.LogRecord]:  # not another test's task collected meanwhile
        return [r for r in caplog.records if r.name == "api.expiry"]

    with caplog.at_level(logging.DEBUG, logger="api.expiry"):
        sweeper.start()
        try:
            async with asyncio.timeout(10):
                while len(swept()) < 2:  # noqa: ASYNC110 (caplog's list, no event)
                    await asyncio.sleep(0.01)
        finally:
            await sweeper.stop()

    first, second = swept()[:2]
    assert (first.levelno, second.levelno) == (logging.WARNING, logging.DEBUG)
    assert first.getMessage().startswith("expiry sweep could not reach the database (will retry):")
    assert "pool is closed" in first.getMessage()
    assert first.exc_info is None


class CountedPool:
    """A pool's ``fetchval``, counted."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.asked = 0

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return await self.pool.fetchval(*args, **kwargs)


async def test_a_grants_view_held_back_is_waited_for_without_asking_every_5_ms(
    isolated_db: IsolatedDatabase,
) -> None:
    """Listing an account's grants waits (1 s at most) for the view to apply the account's
    last event. With the projector stopped or behind, each request asked 200 times in that
    second; now the pause between looks grows."""
    books = isolated_db.ledger()
    try:
        await open_account(books, "acct_view_behind", 100)  # no projector: the view is behind
    finally:
        await books.uow.committer.stop()
    counted = CountedPool(isolated_db.pool)
    views = Views(counted)  # type: ignore[arg-type]

    caught_up_in_time = await views.wait_for_stream("grants", account_stream_id("acct_view_behind"))

    assert not caught_up_in_time
    assert counted.asked <= 40, counted.asked


async def test_a_void_claimed_and_never_recorded_is_reported(isolated_db: IsolatedDatabase) -> None:
    """A void under an Idempotency-Key is answered from its claim: one inserted ahead of the
    request answers it voided while the grant stays open and its credits spendable. A void's
    key is optional, so voids are not counted: each void claim is the request (grant and
    reason) of a void recorded."""
    books, ids = await grants_history(isolated_db)
    await books.execute(
        VoidGrant(account_id=ACCOUNT, grant_id=ids["kept"], reason="gone", idempotency_key="v1")
    )
    open_grant = await grant(books, "open", 10, 50, None)
    await books.uow.committer.stop()
    assert (await verify(isolated_db.pool, max_time_skew=UNJUDGED)).findings == []
    connection = await asyncpg.connect(isolated_db.url)
    try:  # what a request to void the open grant with that reason would be answered from
        await connection.execute(
            """INSERT INTO claims (scope, key, request_hash, response)
               SELECT scope, 'v2', $2, response FROM claims WHERE scope = $1 AND key = 'v1'""",
            f"void/{ACCOUNT}",
            request_fingerprint({"grant_id": open_grant, "reason": "gone"}),
        )
    finally:
        await connection.close()

    report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)

    [finding] = report.findings
    assert (finding.kind, finding.account_id) == ("claim-mismatch", ACCOUNT)
    assert "void key 'v2' is claimed for a void no GrantVoided records" in finding.detail

"""Holds (and the alerts' copy of the buckets) in the views and in ``ledger audit verify``."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from audit.verify import verify
from ledger.commands import GrantCredits, PlaceHold, ResetMonth, SettleHold, SpendCredits
from ledger.domain.account import CreditAccount
from ledger.domain.events import (
    CreditsGranted,
    CreditsSpent,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldReleased,
)
from ledger.handlers.holds import hold_id_for
from ledger.payment_events import CheckoutChange, CheckoutEvent, RefundEvent
from ledger.service import Ledger
from ledger.store.claims import Claim
from ledger.store.commit import ClaimRecord
from projections.queries import Views
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up
from tests.support.ledger import open_account, place_hold, save

# Every audit here runs twice: replayed in this process, and split over two (--jobs 2).
pytestmark = pytest.mark.usefixtures("audit_jobs")


async def holds_history(db: IsolatedDatabase) -> Ledger:
    """Holds captured, released and expired, and one open across a monthly reset."""
    books = db.ledger()
    await open_account(books, "acct_holds", 1000)

    async def hold(key: str, amount: int, seconds: int = 600) -> str:
        placed = await books.execute(
            PlaceHold(
                account_id="acct_holds",
                amount=amount,
                expires_in_seconds=seconds,
                reason=f"job {key}",
                idempotency_key=key,
            )
        )
        return str(placed.hold_id)

    async def settle(hold_id: str, outcome: str, amount: int = 0) -> None:
        await books.execute(
            SettleHold(account_id="acct_holds", hold_id=hold_id, outcome=outcome, amount=amount)  # type: ignore[arg-type]
        )

    captured = await hold("a", 300)
    released = await hold("b", 200)
    expiring = await hold("c", 100, seconds=1)
    carried = await hold("d", 250)
    await books.execute(
        SpendCredits(account_id="acct_holds", amount=50, reason="call", idempotency_key="spend-1")
    )
    await settle(captured, "captured", 120)
    await settle(released, "released")
    await books.execute(ResetMonth(account_id="acct_holds", period="2099-01"))
    await settle(carried, "captured", 200)
    await asyncio.sleep(1.05)
    await settle(expiring, "expired")
    return books


async def test_views_and_the_audit_agree_with_the_replay_of_holds(
    isolated_db: IsolatedDatabase,
) -> None:
    await holds_history(isolated_db)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)
    row = await Views(isolated_db.pool).balance("acct_holds")

    assert report.findings == []
    assert row is not None
    # After the reset the plan's 1,000 are free; the carried hold spent 200 of its 250.
    assert (row.allowance_remaining, row.topup_balance, row.held, row.available) == (
        1000,
        0,
        0,
        1000,
    )
    statement = await Views(isolated_db.pool).statement("acct_holds", limit=100)
    assert statement[0].balance_after == 1000
    assert statement[0].type == "HoldExpired"  # placed before the reset: carried over
    assert statement[0].description.startswith("Hold expired: 0 credits back")
    assert statement[0].description.endswith("100 of last period's allowance lapsed")
    assert statement[1].description.endswith("50 of last period's allowance lapsed")
    statuses = dict(
        await isolated_db.pool.fetch("SELECT reason, status FROM holds ORDER BY reason")
    )
    assert statuses == {
        "job a": "captured",
        "job b": "released",
        "job c": "expired",
        "job d": "captured",
    }


async def test_the_audit_finds_a_holds_view_that_disagrees(isolated_db: IsolatedDatabase) -> None:
    await holds_history(isolated_db)
    await caught_up(isolated_db.store)
    await isolated_db.pool.execute("UPDATE holds SET status = 'held' WHERE reason = 'job b'")
    await isolated_db.pool.execute("UPDATE balances SET held = 7")
    await isolated_db.pool.execute("UPDATE notifier_accounts SET threshold = 5")

    report = await verify(isolated_db.pool)

    kinds = sorted(f.kind for f in report.findings)
    assert kinds == ["balances-view", "holds-view", "notifications-view"]
    assert "threshold is 5 in the view, None replayed" in " ".join(
        f.detail for f in report.findings
    )
    assert "status is held in the view, released replayed" in " ".join(
        f.detail for f in report.findings
    )


async def test_the_audit_compares_every_column_of_a_hold(isolated_db: IsolatedDatabase) -> None:
    """Only the status was compared: a captured hold's amounts, its reason or its account
    could say anything (an audit review); nor when it was placed and settled (the next)."""
    await holds_history(isolated_db)
    await caught_up(isolated_db.store)
    await isolated_db.pool.execute(
        """UPDATE holds SET amount = 5000, captured = 5000, released = 1, reason = 'x',
                  expires_at = '2000-01-01Z', stream_id = gen_random_uuid(),
                  placed_at = '2000-01-01Z', settled_at = '2000-01-02Z'
           WHERE reason = 'job a'"""
    )

    report = await verify(isolated_db.pool)

    assert {f.kind for f in report.findings} == {"holds-view"}
    changed = sorted(f.detail.split(": ", 1)[1].split(" is ")[0] for f in report.findings)
    assert changed == [
        "amount",
        "captured",
        "expires_at",
        "placed_at",
        "reason",
        "released",
        "settled_at",
        "stream_id",
    ]


async def test_the_audit_flags_spends_and_settlements_that_move_credits_their_holds_never_kept(
    isolated_db: IsolatedDatabase,
) -> None:
    """Each of these leaves the account with credits to spare, so no other check sees that
    credits were spent, given back or lapsed from nothing."""
    books = isolated_db.ledger()
    await open_account(books, "acct_parts", 1000)
    holds = [
        await books.execute(
            PlaceHold(
                account_id="acct_parts",
                amount=100,
                expires_in_seconds=600,
                reason="",
                idempotency_key=key,
            )
        )
        for key in ("a", "b", "c")
    ]
    account: CreditAccount = await books.account("acct_parts", fresh=True)

    # What a buggy writer would record: figures the rules do not give.
    common = {"from_topup": 0, "released": 0, "lapsed": 0}
    account.trigger_event(
        CreditsSpent, amount=50, from_allowance=20, from_topup=0, reason="took 20 of 50"
    )
    account.trigger_event(
        HoldCaptured, hold_id=holds[0].hold_id, captured=100, from_allowance=50, **common
    )  # spent 100 of the allowance, recorded 50
    account.trigger_event(
        HoldCaptured, hold_id=holds[1].hold_id, captured=300, from_allowance=300, **common
    )  # more than the hold kept
    account.trigger_event(HoldReleased, hold_id=holds[2].hold_id, released=100, lapsed=60)
    await save(books, account)

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.version, f.detail) for f in report.findings]
    assert found == [
        ("split-mismatch", 5, "a spend of 50 took 20 from the allowance, {} from grants and 0 "
         "from top-ups"),
        ("settlement-mismatch", 6, f"hold {holds[0].hold_id} captured with from_allowance 50 "
         "(the rule gives 100)"),
        ("settlement-mismatch", 7, f"captured 300 of hold {holds[1].hold_id}, which keeps 100 "
         "credits"),
        ("settlement-mismatch", 8, f"hold {holds[2].hold_id} released with lapsed 60 (the rule "
         "gives 0)"),
    ]  # fmt: skip


async def test_the_audit_flags_a_spend_of_the_allowance_an_open_hold_reserves(
    isolated_db: IsolatedDatabase,
) -> None:
    """Its parts add up and it leaves nothing overdrawn, yet recorded as taken from the
    allowance the hold reserves (the rules take the grant), it made credits: a reset carries
    the hold's share whole, and the grant is left (review F)."""
    books = isolated_db.ledger()
    await open_account(books, "acct_held", 100)
    await books.execute(
        GrantCredits(
            account_id="acct_held",
            amount=100,
            priority=0,
            expires_at=None,
            reason="",
            idempotency_key="g",
        )
    )
    await place_hold(books, "acct_held", 100)
    account: CreditAccount = await books.account("acct_held", fresh=True)
    account.trigger_event(
        CreditsSpent, amount=100, from_allowance=100, from_topup=0, reason="the held allowance"
    )
    account.reset_month("2999-01")
    await save(books, account)

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.version, f.detail) for f in report.findings if "allowance" in f.kind]
    assert found == [("negative-allowance", 4, "allowance 0, of which open holds reserve 100")]
    assert (account.allowance_remaining, account.granted, account.held) == (200, 100, 100)


async def test_the_audit_flags_a_spend_that_leaves_less_than_open_holds_reserve(
    isolated_db: IsolatedDatabase,
) -> None:
    """The balance stays above 0, yet less than the open hold reserves: what is available
    (the balance less what holds reserve, written out in the replay's overdraw check) is
    below 0, and the spend overdrew."""
    books = isolated_db.ledger()
    await open_account(books, "acct_over", 100)
    await place_hold(books, "acct_over", 80)
    account: CreditAccount = await books.account("acct_over", fresh=True)
    account.trigger_event(
        CreditsSpent, amount=50, from_allowance=50, from_topup=0, reason="past the hold"
    )
    await save(books, account)

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.version, f.detail) for f in report.findings if f.kind == "overdrawn"]
    assert found == [("overdrawn", 3, "a spend left -30 credits available")]
    assert (account.balance, account.available) == (50, -30)


async def test_the_audit_flags_a_hold_placed_again_while_it_is_open(
    isolated_db: IsolatedDatabase,
) -> None:
    """Placed again under the same id, the account forgot the first reservation: its credits
    were freed with no capture, release or expiry, and every view agreed with the replay."""
    books = isolated_db.ledger()
    await open_account(books, "acct_twice", 1000)
    placed = await books.execute(
        PlaceHold(
            account_id="acct_twice",
            amount=600,
            expires_in_seconds=600,
            reason="job",
            idempotency_key="a",
        )
    )
    hold_id = str(placed.hold_id)
    account: CreditAccount = await books.account("acct_twice", fresh=True)

    # What an insider (or a buggy writer) would record: the same hold placed again, smaller.
    account.trigger_event(
        HoldPlaced,
        hold_id=hold_id,
        amount=10,
        from_allowance=10,
        from_topup=0,
        reason="job",
        expires_at=account.holds[hold_id].expires_at,
        from_grants={},
    )
    await save(books, account)

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.version, f.detail) for f in report.findings]
    assert found == [
        ("hold-placed-twice", 3, f"hold {hold_id} was placed while it was open, "
         "reserving 600: that reservation ends without a settlement"),
    ]  # fmt: skip


@pytest.mark.parametrize(("outcome", "amount"), [("captured", 200), ("released", 0)])
async def test_the_audit_flags_a_hold_placed_again_after_it_was_settled(
    isolated_db: IsolatedDatabase, outcome: str, amount: int
) -> None:
    """A hold's id follows from its request's key, claimed once: a settled hold is never
    placed again (the account does not refuse it: it forgets settled holds). Placed again
    and released, with a claim of its own for the placing and none for the release (the
    first settlement's is there), the claims and every view agreed with the replay."""
    books = isolated_db.ledger()
    await open_account(books, "acct_again", 1000)
    placed = await books.execute(
        PlaceHold(
            account_id="acct_again",
            amount=600,
            expires_in_seconds=600,
            reason="job",
            idempotency_key="a",
        )
    )
    hold_id = str(placed.hold_id)
    await books.execute(
        SettleHold(account_id="acct_again", hold_id=hold_id, outcome=outcome, amount=amount)  # type: ignore[arg-type]
    )
    account: CreditAccount = await books.account("acct_again", fresh=True)

    account.trigger_event(
        HoldPlaced,
        hold_id=hold_id,
        amount=10,
        from_allowance=10,
        from_topup=0,
        reason="job",
        expires_at=placed.expires_at,
        from_grants={},
    )
    account.release_hold(hold_id)
    placing = ClaimRecord(Claim("hold/acct_again", "forged", b""), b"")
    writes = books.repository.writes([account], [placing])
    await books.uow.committer.commit(writes)
    books.repository.committed([account], writes)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.version, f.detail) for f in report.findings]
    assert found == [
        (
            "hold-placed-twice",
            4,
            f"hold {hold_id} was placed again after it was {outcome}: a settled hold is not "
            "placed again, and its settlement's claim answers this one's capture, release "
            "and expiry",
        )
    ]


async def test_the_audit_flags_a_hold_expiry_recorded_before_the_hold_expires(
    isolated_db: IsolatedDatabase,
) -> None:
    """A hold's expiry is recorded once it is due, at the time judged due: one recorded
    before gives the credits back with no release asked, and the capture its service then
    asks is refused (a spend hidden). Its settlement added up, its claim told it, and the
    audit, which judged a grant's expiry by its time but not a hold's, said nothing."""
    books = isolated_db.ledger()
    await open_account(books, "acct_early", 1000)
    placed = await books.execute(
        PlaceHold(
            account_id="acct_early",
            amount=600,
            expires_in_seconds=3600,
            reason="job",
            idempotency_key="h",
        )
    )
    hold_id = str(placed.hold_id)
    account: CreditAccount = await books.account("acct_early", fresh=True)
    expired = account.settlement(hold_id, 0)

    account.trigger_event(
        HoldExpired,
        hold_id=hold_id,
        released=expired.released,
        lapsed=expired.lapsed,
        grants_lapsed=expired.grants_lapsed,
        kept_lapsed=expired.kept_lapsed,
        debt_repaid=expired.debt_repaid,
    )
    await save(books, account)

    report = await verify(isolated_db.pool)

    [finding] = report.findings
    assert (finding.kind, finding.account_id, finding.version) == (
        "hold-expired-early",
        "acct_early",
        3,
    )
    assert finding.detail.startswith(f"hold {hold_id} expires at ")
    assert "its expiry was recorded at" in finding.detail


_EXPIRES = "2999-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("kind", "fields", "found"),
    [
        (
            CreditsSpent,
            {"amount": 0, "from_allowance": 0, "from_topup": 0, "reason": "x"},
            [("invalid-amount", "a spend of 0 credits: the account records spends and holds "
              "of at least 1")],
        ),
        (
            HoldPlaced,
            {"hold_id": "hold_0", "amount": 0, "from_allowance": 0, "from_topup": 0,
             "reason": "x", "expires_at": _EXPIRES, "from_grants": {}},
            [("invalid-amount", "a hold of 0 credits: the account records spends and holds "
              "of at least 1")],
        ),
        (
            HoldPlaced,
            {"hold_id": "hold_minus", "amount": -5, "from_allowance": -5, "from_topup": 0,
             "reason": "x", "expires_at": _EXPIRES, "from_grants": {}},
            [("invalid-amount", "a hold of -5 credits: the account records spends and holds "
              "of at least 1"),
             ("split-mismatch", "a hold of -5 took -5 from the allowance, {} from grants and 0 "
              "from top-ups")],
        ),
        (
            CreditsGranted,
            {"grant_id": "grant_0", "amount": 0, "priority": 0, "expires_at": None,
             "reason": "x"},
            [("invalid-amount", "grant grant_0 of 0 credits: a grant is 1 to 1,000,000,000 "
              "credits")],
        ),
        (
            CreditsGranted,
            {"grant_id": "grant_minus", "amount": -5, "priority": 0, "expires_at": None,
             "reason": "x"},
            [("grant-overdrawn", "took more than grant grant_minus had: -5 of it left"),
             ("invalid-amount", "grant grant_minus of -5 credits: a grant is 1 to "
              "1,000,000,000 credits")],
        ),
        (
            CreditsGranted,
            {"grant_id": "grant_big", "amount": 1_000_000_001, "priority": 0,
             "expires_at": None, "reason": "x"},
            [("invalid-amount", "grant grant_big of 1000000001 credits: a grant is 1 to "
              "1,000,000,000 credits")],
        ),
    ],
    ids=["spend-0", "hold-0", "hold-minus-5", "grant-0", "grant-minus-5", "grant-past-the-most"],
)  # fmt: skip
async def test_the_audit_flags_an_amount_the_account_refuses(
    isolated_db: IsolatedDatabase, kind: type, fields: dict[str, object], found: list[object]
) -> None:
    """A spend or hold of less than 1 credit, or a grant outside 1 to 1,000,000,000, which
    ``CreditAccount`` has refused since such events were first recorded: a spend of 0 took
    nothing from any bucket, so nothing else was found of it."""
    books = isolated_db.ledger()
    await open_account(books, "acct_amounts", 1000)
    account: CreditAccount = await books.account("acct_amounts", fresh=True)

    account.trigger_event(kind, **fields)
    await save(books, account)

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.detail) for f in report.findings] == found
    assert {(f.account_id, f.version) for f in report.findings} == {("acct_amounts", 2)}


async def allowance_held_whole(books: Ledger, account_id: str) -> None:
    """``account_id`` opened with an allowance of 100 and a hold of all of it (key "h")."""
    await open_account(books, account_id, 100)
    await books.execute(
        PlaceHold(
            account_id=account_id,
            amount=100,
            expires_in_seconds=600,
            reason="job",
            idempotency_key="h",
        )
    )


async def buy(books: Ledger, account_id: str, name: str, credits: int) -> None:
    """A paid Checkout session of ``credits`` (payment intent ``pi_<name>``), as Stripe's
    webhook brings it."""
    bought = CheckoutEvent(
        event_id=f"evt_cs_{name}",
        change=CheckoutChange.COMPLETED,
        session_id=f"cs_{name}",
        paid=True,
        payment_intent=f"pi_{name}",
        amount_total=credits,
        currency="usd",
        account_id=account_id,
        credits=credits,
        checkout_url=None,
        expires_at=None,
        marked=True,  # a session the ledger made
    )
    await books.apply_payment_event(bought.event_id, "checkout.session.completed", bought)


async def test_a_carried_share_that_lapses_repays_a_debt_in_the_views_and_the_audit(
    isolated_db: IsolatedDatabase,
) -> None:
    """A hold keeps the allowance over a reset while a refund of spent top-ups leaves a
    debt: released, its share lapses and repays the debt first, in the replay, the balances
    view, the statement and the audit alike."""
    books = isolated_db.ledger()
    await open_account(books, "acct_owes", 100)
    held = await books.execute(
        PlaceHold(
            account_id="acct_owes",
            amount=100,
            expires_in_seconds=600,
            reason="job",
            idempotency_key="h",
        )
    )
    await buy(books, "acct_owes", "owes", 500)
    await books.execute(
        SpendCredits(account_id="acct_owes", amount=400, reason="work", idempotency_key="s")
    )
    refund = RefundEvent(event_id="evt_refund_owes", payment_intent="pi_owes", amount_refunded=500)
    await books.apply_payment_event(refund.event_id, "charge.refunded", refund)
    await books.execute(ResetMonth(account_id="acct_owes", period="2099-01"))
    released = await books.execute(
        SettleHold(account_id="acct_owes", hold_id=held.hold_id, outcome="released")
    )
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)
    row = await Views(isolated_db.pool).balance("acct_owes")
    statement = await Views(isolated_db.pool).statement("acct_owes", limit=1)

    assert report.findings == []
    assert released.balance == 100 - 300  # the plan's 100, and 400 owed less the 100 repaid
    assert row is not None
    assert (row.allowance_remaining, row.topup_balance, row.available) == (100, -300, -200)
    assert statement[0].description == (
        f"Hold released: 0 credits back ({held.hold_id}), 100 of last period's allowance "
        "lapsed (100 of it repaid the top-up debt)"
    )
    assert (statement[0].topup_change, statement[0].allowance_change) == (100, -100)


async def test_the_audit_flags_a_settlement_that_repays_more_than_the_debt_owed(
    isolated_db: IsolatedDatabase,
) -> None:
    """Repaid past what the top-ups owe, a lapsing share would make top-ups from nothing."""
    books = isolated_db.ledger()
    await open_account(books, "acct_repays", 1000)
    held = await books.execute(
        PlaceHold(
            account_id="acct_repays",
            amount=100,
            expires_in_seconds=600,
            reason="",
            idempotency_key="h",
        )
    )
    await books.execute(ResetMonth(account_id="acct_repays", period="2099-01"))
    account: CreditAccount = await books.account("acct_repays", fresh=True)
    account.trigger_event(
        HoldReleased, hold_id=held.hold_id, released=100, lapsed=100, debt_repaid=100
    )  # nothing was owed
    await save(books, account)

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.detail) for f in report.findings]
    assert found == [
        ("settlement-mismatch", f"hold {held.hold_id} released with debt_repaid 100 (the rule "
         "gives at most 0)"),
    ]  # fmt: skip


async def test_the_audit_flags_a_settlement_that_repays_a_debt_owed_only_since_the_reset(
    isolated_db: IsolatedDatabase,
) -> None:
    """A refund after the reset leaves a debt the carried share never owed: had the hold
    settled before the reset, the share would have lapsed with nothing to repay. The
    service's release repays none of it, and the audit flags one that does."""
    books = isolated_db.ledger()
    for account_id in ("acct_later", "acct_planted"):
        await allowance_held_whole(books, account_id)
        await buy(books, account_id, account_id, 500)
        await books.execute(
            SpendCredits(account_id=account_id, amount=400, reason="work", idempotency_key="s")
        )
        await books.execute(ResetMonth(account_id=account_id, period="2099-01"))
        refund = RefundEvent(
            event_id=f"evt_refund_{account_id}",
            payment_intent=f"pi_{account_id}",
            amount_refunded=500,
        )
        await books.apply_payment_event(refund.event_id, "charge.refunded", refund)
    hold_id = (await books.account("acct_later", fresh=True)).holds.popitem()[0]
    released = await books.execute(
        SettleHold(account_id="acct_later", hold_id=hold_id, outcome="released")
    )
    planted: CreditAccount = await books.account("acct_planted", fresh=True)
    [planted_hold] = planted.holds
    planted.trigger_event(
        HoldReleased, hold_id=planted_hold, released=100, lapsed=100, debt_repaid=100
    )  # the 400 owed arose after the reset
    await save(books, planted)

    report = await verify(isolated_db.pool)

    assert released.balance == 100 - 400  # the plan's 100, and the 400 owed stand whole
    found = [(f.kind, f.detail) for f in report.findings]
    assert found == [
        ("settlement-mismatch", f"hold {planted_hold} released with debt_repaid 100 (the rule "
         "gives at most 0)"),
    ]  # fmt: skip


async def test_the_audit_flags_a_settlement_that_repays_a_debt_a_later_reset_repaid(
    isolated_db: IsolatedDatabase,
) -> None:
    """A hold carried over two resets: the first leaves 50 owed that the share would have
    repaid lapsing then, the second repays them from its own allowance. A refund's debt
    after it is not the share's to repay: the service's release repays none of it, and the
    audit flags one that does."""
    books = isolated_db.ledger()

    async def paid(account_id: str, session: str, credits: int) -> None:
        await buy(books, account_id, f"{session}_{account_id}", credits)

    async def refunded(account_id: str, session: str, credits: int) -> None:
        refund = RefundEvent(
            event_id=f"evt_refund_{session}_{account_id}",
            payment_intent=f"pi_{session}_{account_id}",
            amount_refunded=credits,
        )
        await books.apply_payment_event(refund.event_id, "charge.refunded", refund)

    for account_id in ("acct_later", "acct_planted"):
        await allowance_held_whole(books, account_id)
        await paid(account_id, "cs_1", 500)
        await books.execute(  # top-ups: the allowance is held
            SpendCredits(account_id=account_id, amount=50, reason="work", idempotency_key="s1")
        )
        await refunded(account_id, "cs_1", 500)  # 50 owed
        await books.execute(ResetMonth(account_id=account_id, period="2099-01"))
        await books.execute(ResetMonth(account_id=account_id, period="2099-02"))  # repays 50
        await paid(account_id, "cs_2", 200)
        await books.execute(  # the allowance's 100, then 30 of the top-ups
            SpendCredits(account_id=account_id, amount=130, reason="work", idempotency_key="s2")
        )
        await refunded(account_id, "cs_2", 200)  # 30 owed, since the resets
    hold_id = (await books.account("acct_later", fresh=True)).holds.popitem()[0]
    released = await books.execute(
        SettleHold(account_id="acct_later", hold_id=hold_id, outcome="released")
    )
    planted: CreditAccount = await books.account("acct_planted", fresh=True)
    [planted_hold] = planted.holds
    planted.trigger_event(
        HoldReleased, hold_id=planted_hold, released=100, lapsed=100, debt_repaid=30
    )  # the 50 the share was left to repay, the second reset repaid
    await save(books, planted)

    report = await verify(isolated_db.pool)

    assert released.balance == -30  # the new allowance spent, and the 30 owed stand whole
    found = [(f.kind, f.detail) for f in report.findings]
    assert found == [
        ("settlement-mismatch", f"hold {planted_hold} released with debt_repaid 30 (the rule "
         "gives at most 0)"),
    ]  # fmt: skip


async def test_the_audit_flags_a_share_repaying_a_debt_a_later_reset_left_to_later_shares(
    isolated_db: IsolatedDatabase,
) -> None:
    """Two holds of half the allowance each carried over a reset that left 50 owed, then a
    third placed and more owed, carried by the next reset, which leaves 100 more owed: only
    the third's share (and shares carried since) may repay those 100. Captured whole, the
    other two repay the 50 and nothing more, as settled before their reset; the service's
    releases do so, and the audit flags a release that repays the later 100 (50 credits
    made, as each share carried together repaid what any of them might)."""
    books = isolated_db.ledger()

    async def hold(account_id: str, key: str, amount: int) -> str:
        placed = await books.execute(
            PlaceHold(
                account_id=account_id,
                amount=amount,
                expires_in_seconds=600,
                reason="job",
                idempotency_key=key,
            )
        )
        return str(placed.hold_id)

    async def refunded(account_id: str, name: str, credits: int) -> None:
        refund = RefundEvent(
            event_id=f"evt_refund_{name}", payment_intent=f"pi_{name}", amount_refunded=credits
        )
        await books.apply_payment_event(refund.event_id, "charge.refunded", refund)

    holds: dict[str, list[str]] = {}
    for account_id in ("acct_later", "acct_planted"):
        await open_account(books, account_id, 100)
        holds[account_id] = [await hold(account_id, "x", 50), await hold(account_id, "y", 50)]
        await buy(books, account_id, f"a_{account_id}", 500)
        await books.execute(  # top-ups: the allowance is held
            SpendCredits(account_id=account_id, amount=50, reason="work", idempotency_key="s1")
        )
        await refunded(account_id, f"a_{account_id}", 500)  # 50 owed
        await books.execute(ResetMonth(account_id=account_id, period="2099-01"))
        holds[account_id].append(await hold(account_id, "z", 50))  # 50 of the new allowance
        await buy(books, account_id, f"b_{account_id}", 200)
        await books.execute(  # the allowance's other 50, then 100 of the top-ups
            SpendCredits(account_id=account_id, amount=150, reason="work", idempotency_key="s2")
        )
        await refunded(account_id, f"b_{account_id}", 200)  # 150 owed
        await books.execute(ResetMonth(account_id=account_id, period="2099-02"))  # none lapses
        x, y, z = holds[account_id]
        await books.execute(
            SettleHold(account_id=account_id, hold_id=z, outcome="captured", amount=50)
        )
        await books.execute(SettleHold(account_id=account_id, hold_id=x, outcome="released"))
    _, y, _ = holds["acct_later"]
    released = await books.execute(
        SettleHold(account_id="acct_later", hold_id=y, outcome="released")
    )
    planted: CreditAccount = await books.account("acct_planted", fresh=True)
    [planted_hold] = planted.holds
    planted.trigger_event(
        HoldReleased, hold_id=planted_hold, released=50, lapsed=50, debt_repaid=50
    )  # the 100 owed since the first reset, which only the third hold's share may repay
    await save(books, planted)

    report = await verify(isolated_db.pool)

    assert released.balance == 100 - 100  # the plan's 100, and the 100 owed since stand
    found = [(f.kind, f.detail) for f in report.findings]
    assert found == [
        ("settlement-mismatch", f"hold {planted_hold} released with debt_repaid 50 (the rule "
         "gives at most 0)"),
    ]  # fmt: skip


async def test_a_settlement_claimed_for_an_open_hold_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """A settlement claim is the hold's one settlement: inserted for an open hold, its capture,
    release and expiry (the sweeper's too) are answered from it and never recorded, and the
    hold keeps its credits for good. A hold placed again after its claim was deleted (a retry
    of its key) is one more HoldPlaced than there are hold claims, and a settled hold placed
    again."""
    books = await holds_history(isolated_db)
    placed = await books.execute(
        PlaceHold(
            account_id="acct_holds",
            amount=30,
            expires_in_seconds=600,
            reason="job e",
            idempotency_key="e",
        )
    )
    await books.uow.committer.stop()
    connection = await asyncpg.connect(isolated_db.url)
    try:
        await connection.execute(
            """INSERT INTO claims (scope, key, request_hash, response)
               SELECT scope, $1, request_hash, response FROM claims
               WHERE scope = 'hold-settlement/acct_holds' LIMIT 1""",
            placed.hold_id,
        )
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute(
                "DELETE FROM claims WHERE scope = 'hold/acct_holds' AND key = 'a'"
            )
    finally:
        await connection.close()
    again = await books.execute(
        PlaceHold(
            account_id="acct_holds",
            amount=300,
            expires_in_seconds=600,
            reason="job a",
            idempotency_key="a",
        )
    )  # captured long ago: placed again, and its settlement is claimed already
    await books.uow.committer.stop()

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id) for f in report.findings] == [
        ("hold-placed-twice", "acct_holds"),
    ] + [("claim-mismatch", "acct_holds")] * 3
    details = " ".join(f.detail for f in report.findings)
    assert f"hold {again.hold_id} was placed again after it was captured" in details
    assert "5 hold claims, 6 HoldPlaced" in details
    for hold_id in sorted({placed.hold_id, again.hold_id}):
        assert f"hold {hold_id} is open and its settlement is claimed" in details


async def test_a_settled_holds_claim_that_tells_another_settlement_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """Only open holds' settlement claims were checked. The service's role appends a
    settlement with any claim it likes (append() takes both): a release recorded with the
    answer of a capture tells the capture's caller, and every retry and read of the hold,
    that its credits were spent while they went back; a claim of a hold never placed
    answers that hold's capture, release and expiry once it is placed. Both are found."""
    books = await holds_history(isolated_db)
    await books.uow.committer.stop()
    released = hold_id_for("acct_holds", "b")
    captured = hold_id_for("acct_holds", "a")
    never_placed = hold_id_for("acct_holds", "z")
    connection = await asyncpg.connect(isolated_db.url)
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute(
                """UPDATE claims SET response = convert_to((convert_from(response, 'UTF8')::jsonb
                       || '{"status": "captured", "captured": 200, "released": 0}')::text, 'UTF8')
                   WHERE scope = 'hold-settlement/acct_holds' AND key = $1""",
                released,
            )
        await connection.execute(
            """INSERT INTO claims (scope, key, request_hash, response)
               SELECT scope, $1, request_hash, response FROM claims
               WHERE scope = 'hold-settlement/acct_holds' AND key = $2""",
            never_placed,
            captured,
        )
    finally:
        await connection.close()

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id) for f in report.findings] == [
        ("claim-mismatch", "acct_holds"),
    ] * 2
    details = " ".join(f.detail for f in report.findings)
    assert f"hold {released}'s settlement claim answers captured 200, released 0" in details
    assert "its HoldReleased records released 200" in details
    assert f"hold {never_placed}'s settlement is claimed, and no such hold was settled" in details


async def test_hold_answers_naming_another_account_are_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """A hold's placement and settlement claims answer their retries and the hold's reads:
    rewritten by the tables' owner to name another account, they tell its balances."""
    books = await holds_history(isolated_db)
    await books.uow.committer.stop()
    captured = hold_id_for("acct_holds", "a")
    connection = await asyncpg.connect(isolated_db.url)
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute(
                """UPDATE claims SET response = convert_to((convert_from(response, 'UTF8')::jsonb
                       || '{"account_id": "acct_other"}')::text, 'UTF8')
                   WHERE (scope, key) IN (('hold/acct_holds', 'b'),
                                          ('hold-settlement/acct_holds', $1))""",
                captured,
            )
    finally:
        await connection.close()

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id, f.detail) for f in report.findings] == [
        (
            "claim-mismatch",
            "acct_holds",
            f"the answer kept for {scope} key {key!r} names account acct_other, not the "
            "account its command wrote: a retry of the key is given it",
        )
        for scope, key in (("hold", "b"), ("hold-settlement", captured))
    ]


async def test_a_settled_hold_whose_settlement_claim_is_gone_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """A settled hold's claim is what answers its reads and the retries of its capture,
    release and expiry: with it deleted (by hand; the service's roles cannot), the hold reads
    as never placed, and a capture's retry is told 404. The audit says so."""
    books = await holds_history(isolated_db)
    await books.uow.committer.stop()
    captured = hold_id_for("acct_holds", "a")
    connection = await asyncpg.connect(isolated_db.url)
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            deleted = await connection.execute(
                "DELETE FROM claims WHERE scope = 'hold-settlement/acct_holds' AND key = $1",
                captured,
            )
        assert deleted == "DELETE 1"
    finally:
        await connection.close()

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id) for f in report.findings] == [("claim-mismatch", "acct_holds")]
    assert f"hold {captured} was captured and no claim records its settlement" in (
        report.findings[0].detail
    )

"""``ledger audit verify`` on what the service trusts: refunds and disputes, and snapshots."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from audit.verify import Report, verify
from ledger.commands import PlaceHold, ResetMonth, SettleHold, SpendCredits
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.errors import HoldHasExpired
from ledger.domain.events import MonthlyAllowanceReset, PaymentRefunded, RefundUpdated
from ledger.domain.holds import KeptPart, repayable_by
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.domain.payment_intent import PaymentIntent
from ledger.payment_events import DisputeEvent, RefundEvent, RefundUpdate
from ledger.service import Ledger, Pricing
from ledger.store.migrate import available_migrations
from ledger.store.repository import SNAPSHOT_EVERY
from tests.conftest import IsolatedDatabase
from tests.integration.test_audit import paid, tamper
from tests.integration.test_checkpoints import rebuild_views, rewrite_stream
from tests.support.events import caught_up
from tests.support.ledger import open_account, save
from tests.support.times import UNJUDGED

# Every audit here runs twice: replayed in this process, and split over two (--jobs 2).
pytestmark = pytest.mark.usefixtures("audit_jobs")


async def refund(books: Ledger, intent: str, amount_refunded: int) -> None:
    event = RefundEvent(
        event_id=f"evt_refund_{intent}_{amount_refunded}",
        payment_intent=intent,
        amount_refunded=amount_refunded,
    )
    await books.apply_payment_event(event.event_id, "charge.refunded", event)


async def dispute(books: Ledger, intent: str, dispute_id: str, status: str, amount: int) -> None:
    event = DisputeEvent(
        event_id=f"evt_{dispute_id}_{status}",
        dispute_id=dispute_id,
        payment_intent=intent,
        status=status,
        amount=amount,
    )
    await books.apply_payment_event(event.event_id, "charge.dispute.updated", event)


async def pay(books: Ledger, session_id: str, account_id: str, credits: int, intent: str) -> None:
    event = paid(session_id, account_id, credits, intent)
    await books.apply_payment_event(event.event_id, "checkout.session.completed", event)


async def refunds_and_disputes(db: IsolatedDatabase) -> Ledger:
    """Purchases refunded and disputed in every order the ledger accepts, all faithful."""
    books = db.ledger()
    await open_account(books, "acct_carol", 100)
    # A refund that arrives before its payment waits on the payment intent's stream.
    await refund(books, "pi_early", 250)
    await pay(books, "cs_early", "acct_carol", 1000, "pi_early")
    # An inquiry takes nothing; a chargeback won gives everything back.
    await pay(books, "cs_won", "acct_carol", 600, "pi_won")
    await dispute(books, "pi_won", "dp_won", "warning_needs_response", 600)
    await dispute(books, "pi_won", "dp_won", "needs_response", 600)
    await dispute(books, "pi_won", "dp_won", "won", 600)
    # A chargeback lost, then a refund of the same money: taken back once.
    await pay(books, "cs_lost", "acct_carol", 400, "pi_lost")
    await dispute(books, "pi_lost", "dp_lost", "needs_response", 400)
    await dispute(books, "pi_lost", "dp_lost", "lost", 400)
    await refund(books, "pi_lost", 400)
    # A chargeback still open holds its credits back.
    await pay(books, "cs_open", "acct_carol", 500, "pi_open")
    await dispute(books, "pi_open", "dp_open", "needs_response", 500)
    await caught_up(db.store)
    return books


def kinds(report: Report) -> list[str]:
    return sorted(f.kind for f in report.findings)


async def test_refunds_and_disputes_in_any_order_verify_clean_and_show_in_purchases(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await refunds_and_disputes(isolated_db)

    report = await verify(isolated_db.pool)

    assert report.findings == []
    rows = {
        r["session_id"]: (r["status"], r["credits_clawed_back"], r["credits_reversed"])
        for r in await isolated_db.pool.fetch("SELECT * FROM purchases")
    }
    assert rows == {
        "cs_early": ("paid", 250, 0),
        "cs_won": ("paid", 0, 0),
        "cs_lost": ("refunded", 400, 0),
        "cs_open": ("paid", 0, 500),
    }
    # A payment intent has a stream of its own only when a refund or dispute came before
    # its payment (pi_early; the others' links are claims), and no rows in any account's views.
    assert report.streams == report.accounts + report.checkout_sessions + 1
    assert await isolated_db.pool.fetchval("SELECT count(*) FROM balances") == 1
    await books.uow.committer.stop()


async def refund_update(
    books: Ledger, intent: str, refund_id: str, amount: int, status: str
) -> None:
    event = RefundUpdate(
        event_id=f"evt_{refund_id}_{status}",
        refund_id=refund_id,
        payment_intent=intent,
        amount=amount,
        status=status,
    )
    await books.apply_payment_event(event.event_id, "charge.refund.updated", event)


async def test_refunds_that_failed_verify_clean_and_show_the_purchase_paid_again(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    await open_account(books, "acct_dave", 100)
    # Refunded in full, then the refund failed: all given back, the purchase paid again.
    await pay(books, "cs_back", "acct_dave", 800, "pi_back")
    await refund(books, "pi_back", 800)
    await refund_update(books, "pi_back", "re_back", 800, "failed")
    # The failure told before its payment and its charge.refunded: nothing ever taken.
    await refund_update(books, "pi_first", "re_first", 300, "failed")
    await pay(books, "cs_first", "acct_dave", 600, "pi_first")
    await refund(books, "pi_first", 300)
    # One of two refunds failed, under a lost chargeback of the rest.
    await pay(books, "cs_mixed", "acct_dave", 1000, "pi_mixed")
    await refund(books, "pi_mixed", 200)
    await refund_update(books, "pi_mixed", "re_a", 200, "succeeded")
    await refund(books, "pi_mixed", 500)
    await refund_update(books, "pi_mixed", "re_b", 300, "succeeded")
    await dispute(books, "pi_mixed", "dp_mixed", "lost", 500)
    await refund_update(books, "pi_mixed", "re_a", 200, "failed")
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert report.findings == []
    rows = {
        r["session_id"]: (r["status"], r["amount_refunded"], r["credits_clawed_back"])
        for r in await isolated_db.pool.fetch("SELECT * FROM purchases")
    }
    assert rows == {
        "cs_back": ("paid", 0, 0),
        "cs_first": ("paid", 0, 0),
        "cs_mixed": ("paid", 300, 300),
    }
    lines = await isolated_db.pool.fetch(
        "SELECT type, amount, description FROM statement_lines WHERE description LIKE 'Refund%'"
        " ORDER BY position"
    )
    assert [tuple(line) for line in lines] == [
        ("CreditsClawedBack", -800, "Refunded top-up (cs_back)"),
        ("CreditsRestored", 800, "Refund failed (cs_back)"),
        ("CreditsClawedBack", -200, "Refunded top-up (cs_mixed)"),
        ("CreditsClawedBack", -300, "Refunded top-up (cs_mixed)"),
        ("CreditsRestored", 200, "Refund failed (cs_mixed)"),
    ]
    account = await books.account("acct_dave")
    # 800 + 600 kept; of cs_mixed 300 refunded and the chargeback's 500 lost: 200 kept.
    assert account.topup_balance == 800 + 600 + 200
    await books.uow.committer.stop()


def refund_life(intent: str, n: int, amount: int, *statuses: str) -> list[RefundUpdate]:
    return [
        RefundUpdate(
            event_id=f"evt_{intent}_re{n}_{status}",
            refund_id=f"re_{intent}_{n}",
            payment_intent=intent,
            amount=amount,
            status=status,
        )
        for status in statuses
    ]


def figure(intent: str, amount_refunded: int) -> RefundEvent:
    return RefundEvent(
        event_id=f"evt_{intent}_cr{amount_refunded}",
        payment_intent=intent,
        amount_refunded=amount_refunded,
    )


def chargeback(intent: str, amount: int, *statuses: str) -> list[DisputeEvent]:
    return [
        DisputeEvent(
            event_id=f"evt_{intent}_dp_{status}",
            dispute_id=f"dp_{intent}",
            payment_intent=intent,
            status=status,
            amount=amount,
        )
        for status in statuses
    ]


_EVENT_TYPES: dict[type, str] = {
    RefundEvent: "charge.refunded",
    RefundUpdate: "charge.refund.updated",
    DisputeEvent: "charge.dispute.updated",
}


async def test_refunds_pending_canceled_and_failing_under_a_chargeback_verify_clean_in_any_order(
    isolated_db: IsolatedDatabase,
) -> None:
    """Refunds through more of their lives than a failure (pending, requires_action then
    canceled, one failing under a chargeback of the whole charge, one made after another
    failed on an API version without refund.created), every event shuffled with the payments
    and some delivered twice: the audit finds nothing, before and after the views are rebuilt,
    and the purchases show what the facts give."""
    books = isolated_db.ledger()
    await open_account(books, "acct_erin", 100)
    stripe: list[Any] = [
        # Pending 300 succeeded, pending 200 failed: 300 refunded.
        *[figure("pi_pend", 300), *refund_life("pi_pend", 0, 300, "pending", "succeeded")],
        *[figure("pi_pend", 500), *refund_life("pi_pend", 1, 200, "pending", "failed")],
        # The whole charge refunded, waiting on the customer, then canceled: nothing.
        *[figure("pi_cancel", 1000)],
        *refund_life("pi_cancel", 0, 1000, "requires_action", "canceled"),
        # A pending refund of everything; the customer disputes, the refund fails
        # (charge_for_pending_refund_disputed) and the chargeback is lost: all disputed.
        *[figure("pi_disp", 1000), *refund_life("pi_disp", 0, 1000, "pending", "failed")],
        *chargeback("pi_disp", 1000, "needs_response", "lost"),
        # Refunded 400, failed; 300 refunded then, told by charge.refunded alone: taken back
        # less the failed refund (README: refunds that fail), 0.
        *[figure("pi_old", 400), *refund_life("pi_old", 0, 400, "failed"), figure("pi_old", 300)],
    ]
    payments = [
        paid(session, "acct_erin", 1000, f"pi_{session[3:]}")
        for session in ("cs_pend", "cs_cancel", "cs_disp", "cs_old")
    ]
    order = random.Random(11)
    deliveries = [*stripe, *payments]
    order.shuffle(deliveries)
    deliveries += order.sample(deliveries, 6)  # Stripe delivers at least once
    for event in deliveries:
        kind = _EVENT_TYPES.get(type(event), "checkout.session.completed")
        await books.apply_payment_event(event.event_id, kind, event)
    await caught_up(isolated_db.store)
    expected = {
        "cs_pend": ("paid", 300, 300, 0),
        "cs_cancel": ("paid", 0, 0, 0),
        "cs_disp": ("paid", 0, 0, 1000),
        "cs_old": ("paid", 0, 0, 0),
    }
    query = (
        "SELECT session_id, status, amount_refunded, credits_clawed_back, credits_reversed"
        " FROM purchases"
    )

    for rebuilt in (False, True):
        if rebuilt:
            await rebuild_views(isolated_db)
        report = await verify(isolated_db.pool)
        assert report.findings == []
        rows = {r["session_id"]: tuple(r.values())[1:] for r in await isolated_db.pool.fetch(query)}
        assert rows == expected
    account = await books.account("acct_erin")
    assert account.topup_balance == 700 + 1000 + 0 + 1000
    await books.uow.committer.stop()


async def test_a_debt_repaid_at_a_reset_is_in_every_view_and_the_audit_agrees(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    await open_account(books, "acct_dan", 1000)
    await pay(books, "cs_dan", "acct_dan", 500, "pi_dan")
    await books.execute(
        SpendCredits(account_id="acct_dan", amount=1500, reason="work", idempotency_key="k1")
    )
    await refund(books, "pi_dan", 500)  # spent already: the top-up goes to -500
    await books.execute(ResetMonth(account_id="acct_dan", period="2999-01"))
    await books.execute(ResetMonth(account_id="acct_dan", period="2999-02"))  # 500 repaid
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert report.findings == []
    row = await isolated_db.pool.fetchrow(
        "SELECT allowance_remaining, topup_balance FROM balances WHERE account_id = 'acct_dan'"
    )
    assert tuple(row) == (1000, 0)
    line = await isolated_db.pool.fetchrow(
        """SELECT topup_change, balance_after, description FROM statement_lines
           WHERE account_id = 'acct_dan' ORDER BY position DESC LIMIT 1"""
    )
    assert tuple(line) == (
        500,
        1000,
        "Monthly allowance reset for 2999-02; 500 of the allowance that lapsed repaid the "
        "top-up debt",
    )
    await books.uow.committer.stop()


async def test_a_reset_after_a_holds_expiry_repays_the_debt_with_the_allowance_it_held(
    isolated_db: IsolatedDatabase,
) -> None:
    """A hold past its expiry when a reset is decided has expired, swept or not: the reset
    records its expiry first, so its allowance share lapses with the old period's and repays
    the debt. Carried over as if work in progress could still capture it, the share lapsed
    at the sweep a second later, repaying nothing: the customer owed the 500 still, and paid
    them again from the next month's allowance."""
    now = [datetime(2999, 1, 31, 23, 59, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_ivy", 1000)
    await pay(books, "cs_ivy", "acct_ivy", 500, "pi_ivy")
    held = await books.execute(
        PlaceHold(
            account_id="acct_ivy",
            amount=1000,
            expires_in_seconds=60,
            reason="job",
            idempotency_key="h1",
        )
    )  # the whole allowance
    await books.execute(
        SpendCredits(account_id="acct_ivy", amount=500, reason="work", idempotency_key="k1")
    )  # the top-ups
    await refund(books, "pi_ivy", 500)  # spent already: the top-up goes to -500
    now[0] += timedelta(seconds=60)  # the hold's expiry, which no sweep has recorded yet

    reset = await books.execute(ResetMonth(account_id="acct_ivy", period="2999-02"))

    assert (reset.allowance_remaining, reset.topup_balance, reset.held) == (1000, 0, 0)
    # The expiry is recorded, with its settlement's answer: a capture is refused as late,
    # a read shows it expired, and the sweeper coming after it records nothing more.
    with pytest.raises(HoldHasExpired):
        await books.execute(
            SettleHold(account_id="acct_ivy", hold_id=held.hold_id, outcome="captured", amount=1)
        )
    assert (await books.hold("acct_ivy", held.hold_id)).status == "expired"
    version = (await books.account("acct_ivy", fresh=True)).version
    await books.execute(SettleHold(account_id="acct_ivy", hold_id=held.hold_id, outcome="expired"))
    assert (await books.account("acct_ivy", fresh=True)).version == version
    await caught_up(isolated_db.store)
    assert (await verify(isolated_db.pool, max_time_skew=UNJUDGED)).findings == []
    await books.uow.committer.stop()


async def test_a_reset_that_repaid_more_than_the_debt_is_a_reset_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    """The replay applied a reset's figures as recorded: one rewritten to repay 900 more
    made top-up credits from nothing, and the chain recomputed hid it (a diff review)."""
    books = isolated_db.ledger()
    await open_account(books, "acct_eve", 1000)
    await pay(books, "cs_eve", "acct_eve", 500, "pi_eve")
    await books.execute(
        SpendCredits(account_id="acct_eve", amount=1500, reason="work", idempotency_key="k1")
    )
    await refund(books, "pi_eve", 500)
    await books.execute(ResetMonth(account_id="acct_eve", period="2999-01"))
    await books.execute(ResetMonth(account_id="acct_eve", period="2999-02"))  # repays 500
    await books.uow.committer.stop()
    stream = account_stream_id("acct_eve")
    version = await isolated_db.pool.fetchval(
        """SELECT max(originator_version) FROM stored_events WHERE originator_id = $1""",
        stream,
    )
    await rewrite_stream(
        isolated_db.url, stream, version, '"debt_repaid":500', '"debt_repaid":1400'
    )

    report = await verify(isolated_db.pool)

    [mismatch] = [f for f in report.findings if f.kind == "reset-mismatch"]
    assert mismatch.detail == (
        "the reset carried 0, repaid 1400 of a debt and kept 0 for held top-ups; the account "
        "before it gives 0 carried, at most 500 repaid and 0 kept"
    )


async def test_a_reset_of_a_period_not_after_the_accounts_or_off_its_plan_is_a_reset_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    """A reset of the same period changes nothing and an earlier one is refused: one
    appended anyway gives the month's allowance again, as one that sets more than the plan
    does. The service's role may append either; the replay applied both as recorded."""
    books = isolated_db.ledger()
    await open_account(books, "acct_gus", 100)
    await books.execute(ResetMonth(account_id="acct_gus", period="2999-01"))
    account = await books.account("acct_gus")
    for period, allowance in (("2999-01", 100), ("2998-12", 100), ("2999-02", 1_000_000)):
        account.trigger_event(
            MonthlyAllowanceReset,
            period=period,
            monthly_allowance=allowance,
            held_allowance_carried=0,
            debt_repaid=0,
            held_topup_kept=0,
        )
    await save(books, account)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert kinds(report) == ["reset-mismatch"] * 3
    assert [(f.version, f.detail) for f in report.findings] == [
        (
            3,
            "the reset to 2999-01 set the allowance to 100; the account before it was in "
            "2999-01 with a plan of 100: a reset is of a later period, to the plan",
        ),
        (
            4,
            "the reset to 2998-12 set the allowance to 100; the account before it was in "
            "2999-01 with a plan of 100: a reset is of a later period, to the plan",
        ),
        (
            5,
            "the reset to 2999-02 set the allowance to 1000000; the account before it was in "
            "2998-12 with a plan of 100: a reset is of a later period, to the plan",
        ),
    ]
    await books.uow.committer.stop()


async def test_a_reset_that_kept_more_for_held_top_ups_than_a_refund_took_is_a_reset_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    await open_account(books, "acct_fay", 1000)

    async def place(key: str, amount: int) -> str:
        command = PlaceHold(
            account_id="acct_fay",
            amount=amount,
            expires_in_seconds=3600,
            reason="job",
            idempotency_key=key,
        )
        return str((await books.execute(command)).hold_id)

    on_allowance = await place("k_allowance", 1000)
    await pay(books, "cs_fay", "acct_fay", 500, "pi_fay")
    await place("k_topups", 500)
    await books.execute(SettleHold(account_id="acct_fay", hold_id=on_allowance, outcome="released"))
    await refund(books, "pi_fay", 500)
    await books.execute(ResetMonth(account_id="acct_fay", period="2999-01"))  # keeps 500
    await books.uow.committer.stop()
    stream = account_stream_id("acct_fay")
    version = await isolated_db.pool.fetchval(
        """SELECT max(originator_version) FROM stored_events WHERE originator_id = $1""",
        stream,
    )
    await rewrite_stream(
        isolated_db.url, stream, version, '"held_topup_kept":500', '"held_topup_kept":900'
    )

    report = await verify(isolated_db.pool)

    [mismatch] = [f for f in report.findings if f.kind == "reset-mismatch"]
    assert mismatch.detail == (
        "the reset carried 0, repaid 0 of a debt and kept 900 for held top-ups; the account "
        "before it gives 0 carried, at most 0 repaid and 500 kept"
    )


async def test_a_clawback_its_session_never_made_is_an_adjustment_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await refunds_and_disputes(isolated_db)
    account = await books.account("acct_carol")
    account.claw_back("cs_won", 100)  # bypassing the session: a bug's footprint
    account.reverse_for_dispute("cs_nobody_sold", "dp_x", 5)
    await save(books, account)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert kinds(report) == ["adjustment-mismatch", "adjustment-mismatch"]
    made_up, won = sorted(report.findings, key=lambda f: f.detail)
    assert won.detail == (
        "session cs_won: its account's events took back 100 credits, the session 0"
    )
    assert won.account_id == "acct_carol"
    assert made_up.detail.startswith("credits taken back for session cs_nobody_sold")
    await books.uow.committer.stop()


async def test_a_refund_told_as_a_chargeback_on_its_account_is_an_adjustment_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    """Clawbacks, reversals and restorations move the same balance: compared in total, a
    refund's credits reversed for a dispute that never was, or a chargeback and its win made
    up around a purchase never disputed, passed, and the account's statement told them. Each
    kind is compared with what the session's events moved of it."""
    books = await refunds_and_disputes(isolated_db)
    await pay(books, "cs_kind", "acct_carol", 500, "pi_kind")
    session: Any = await books.repository.get(
        CheckoutSession, checkout_stream_id("cs_kind"), fresh=True
    )
    account = await books.account("acct_carol")
    session.trigger_event(
        PaymentRefunded, amount_refunded=100, credits_clawed_back=100, credits_restored=0
    )
    account.reverse_for_dispute("cs_kind", "dp_never", 100)
    account.reverse_for_dispute("cs_early", "dp_ghost", 700)
    account.restore_after_dispute("cs_early", "dp_ghost", 700)
    await save(books, session, account)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert kinds(report) == ["adjustment-mismatch", "adjustment-mismatch"]
    assert sorted(f.detail for f in report.findings) == [
        "session cs_early: its account's events 250 clawed back for refunds, 0 given back for "
        "failed refunds, 700 reversed for chargebacks, 700 restored after chargebacks; the "
        "session's 250 clawed back for refunds, 0 given back for failed refunds, 0 reversed "
        "for chargebacks, 0 restored after chargebacks",
        "session cs_kind: its account's events 0 clawed back for refunds, 0 given back for "
        "failed refunds, 100 reversed for chargebacks, 0 restored after chargebacks; the "
        "session's 100 clawed back for refunds, 0 given back for failed refunds, 0 reversed "
        "for chargebacks, 0 restored after chargebacks",
    ]
    await books.uow.committer.stop()


async def test_a_refund_the_session_took_back_as_a_chargeback_is_an_adjustment_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    """The rule gives what refunds and what disputes take back, each: the purchase's row
    shows both, and its account's statement tells which it was."""
    books = await refunds_and_disputes(isolated_db)
    await pay(books, "cs_kind", "acct_carol", 500, "pi_kind")
    session: Any = await books.repository.get(
        CheckoutSession, checkout_stream_id("cs_kind"), fresh=True
    )
    account = await books.account("acct_carol")
    session.trigger_event(
        RefundUpdated,
        refund_id="re_told_as_a_dispute",
        amount=100,
        status="succeeded",
        amount_refunded=100,
        credits_clawed_back=0,
        credits_given_back=0,
        credits_reversed=100,
        credits_restored=0,
    )
    account.reverse_for_dispute("cs_kind", "", 100)
    await save(books, session, account)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    [finding] = report.findings
    assert finding.kind == "adjustment-mismatch"
    assert finding.detail == (
        "session cs_kind: its refunds and disputes took back 100 credits (0 refunded, "
        "100 disputed), its facts 100 (100 refunded, 0 disputed)"
    )
    await books.uow.committer.stop()


async def test_a_refund_that_took_more_than_its_facts_allow_is_found_though_both_agree(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await refunds_and_disputes(isolated_db)
    session: Any = await books.repository.get(
        CheckoutSession, checkout_stream_id("cs_won"), fresh=True
    )
    account = await books.account("acct_carol")
    # 100 of 600 money refunded is 100 credits; the session and its account say 300.
    session.trigger_event(
        PaymentRefunded, amount_refunded=100, credits_clawed_back=300, credits_restored=0
    )
    account.claw_back("cs_won", 300)
    await save(books, session, account)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    [finding] = report.findings
    assert finding.kind == "adjustment-mismatch"
    assert finding.detail == (
        "session cs_won: its refunds and disputes took back 300 credits (300 refunded, "
        "0 disputed), its facts 100 (100 refunded, 0 disputed)"
    )
    await books.uow.committer.stop()


async def test_credits_a_refund_took_in_a_disputes_stead_are_found_though_the_sum_agrees(
    isolated_db: IsolatedDatabase,
) -> None:
    """An open chargeback of all 500 holds 500 credits back, none refunded. Recorded as 200
    refunded and 300 disputed, the sum agrees with the facts, but the dispute won gives back
    300 and the refund keeps 200 it never had: the split is judged too."""
    books = await refunds_and_disputes(isolated_db)
    session: Any = await books.repository.get(
        CheckoutSession, checkout_stream_id("cs_open"), fresh=True
    )
    account = await books.account("acct_carol")
    session.trigger_event(
        PaymentRefunded, amount_refunded=0, credits_clawed_back=200, credits_restored=200
    )
    account.claw_back("cs_open", 200)
    account.restore_after_dispute("cs_open", "dp_open", 200)
    await save(books, session, account)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    [finding] = report.findings
    assert finding.kind == "adjustment-mismatch"
    assert finding.detail == (
        "session cs_open: its refunds and disputes took back 500 credits (200 refunded, "
        "300 disputed), its facts 500 (0 refunded, 500 disputed)"
    )
    await books.uow.committer.stop()


async def test_a_failed_refund_that_gave_back_more_than_its_facts_allow_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    """The money refunded a session records is figured from its facts (the largest
    ``amount_refunded``, its refunds by id): one recorded less, the credits given back with
    it, is found though the session and its account agree."""
    books = await refunds_and_disputes(isolated_db)
    session: Any = await books.repository.get(
        CheckoutSession, checkout_stream_id("cs_early"), fresh=True
    )
    account = await books.account("acct_carol")
    # 250 refunded, then a refund of 50 failed: 200 still refunded, 200 credits taken back.
    # The session and its account say the failure left nothing refunded and gave back 250.
    session.trigger_event(
        RefundUpdated,
        refund_id="re_forged",
        amount=50,
        status="failed",
        amount_refunded=0,
        credits_clawed_back=0,
        credits_given_back=250,
        credits_reversed=0,
        credits_restored=0,
    )
    account.restore_after_refund("cs_early", "re_forged", 250)
    await save(books, session, account)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert kinds(report) == ["adjustment-mismatch", "adjustment-mismatch"]
    assert sorted(f.detail for f in report.findings) == [
        "session cs_early: it recorded 0 refunded, its facts 200",
        "session cs_early: its refunds and disputes took back 0 credits (0 refunded, "
        "0 disputed), its facts 200 (200 refunded, 0 disputed)",
    ]
    await books.uow.committer.stop()


async def test_what_an_intent_kept_before_its_payment_and_its_session_never_took_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    """A refund and a lost chargeback kept on the payment intent's stream, the intent linked
    to its session, which never took them (as a ledger that dropped them when the payment
    linked the intent would leave it): the session and its account agree, and the customer
    keeps 500 credits whose money went back."""
    books = await refunds_and_disputes(isolated_db)
    await pay(books, "cs_kept", "acct_carol", 500, "pi_kept")
    intent = PaymentIntent.record("pi_kept")
    intent.hold_refund(200)
    intent.hold_refund_update("re_kept", 200, "succeeded")
    intent.hold_dispute("dp_kept", "lost", 300)
    intent.link("cs_kept")
    await save(books, intent)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    [finding] = report.findings
    assert finding.kind == "payment-link"
    assert finding.account_id == "acct_carol"
    assert finding.detail == (
        "payment intent pi_kept kept, before its payment, what its session cs_kept never "
        "took: an amount_refunded of 200, refund re_kept (succeeded), dispute dp_kept (lost)"
    )
    await books.uow.committer.stop()


async def test_more_money_of_a_dispute_an_intent_kept_that_its_session_never_took_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    """The session takes a dispute's news of more money in the same status (``newer``): one
    that heard a chargeback of 100 lost, linked to an intent that kept it lost for 300,
    never took the 300 (the customer keeps 200 credits whose money the bank took back)."""
    books = await refunds_and_disputes(isolated_db)
    await pay(books, "cs_more", "acct_carol", 500, "pi_more")
    await dispute(books, "pi_more", "dp_more", "lost", 100)
    intent = PaymentIntent.record("pi_more")
    intent.hold_dispute("dp_more", "lost", 300)
    intent.link("cs_more")
    await save(books, intent)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    [finding] = report.findings
    assert (finding.kind, finding.account_id) == ("payment-link", "acct_carol")
    assert finding.detail == (
        "payment intent pi_more kept, before its payment, what its session cs_more never "
        "took: dispute dp_more (lost)"
    )
    await books.uow.committer.stop()


async def test_a_rewritten_refund_is_found_even_with_its_hashes_recomputed(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await refunds_and_disputes(isolated_db)
    await books.uow.committer.stop()
    stream = checkout_stream_id("cs_early")
    version = await isolated_db.pool.fetchval(
        """SELECT originator_version FROM stored_events
           WHERE originator_id = $1 AND topic LIKE '%PaymentRefunded'""",
        stream,
    )
    await rewrite_stream(
        isolated_db.url,
        stream,
        version,
        '"credits_clawed_back":250',
        '"credits_clawed_back":50',
    )

    report = await verify(isolated_db.pool)

    assert kinds(report) == ["adjustment-mismatch", "adjustment-mismatch", "purchases-view"]
    details = sorted(f.detail for f in report.findings if f.kind == "adjustment-mismatch")
    assert details == [
        "session cs_early: its account's events took back 250 credits, the session 50",
        "session cs_early: its refunds and disputes took back 50 credits (50 refunded, "
        "0 disputed), its facts 250 (250 refunded, 0 disputed)",
    ]


# The purchases view as the first release's projector left it: no credits_reversed
# (0013), and a dispute did not move a row's updated_at (0023).
_AS_FIRST_PROJECTED = """UPDATE purchases p SET credits_reversed = 0, updated_at = (
    SELECT max(e.recorded_at) FROM stored_events e
    WHERE e.originator_id = p.stream_id
      AND e.topic !~ '[.:](PaymentDisputed|DisputeClosed|DisputeUpdated)$')"""


async def test_the_migrations_fill_what_disputes_changed_of_purchases_projected_before_them(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await refunds_and_disputes(isolated_db)
    await books.uow.committer.stop()
    await isolated_db.pool.execute(_AS_FIRST_PROJECTED)
    migrations = [sql for version, _, sql in available_migrations() if version in (13, 23)]

    before = await verify(isolated_db.pool)
    admin = await asyncpg.connect(isolated_db.url)
    try:
        for sql in migrations:
            await admin.execute(sql)
    finally:
        await admin.close()
    after = await verify(isolated_db.pool)

    details = " ".join(f.detail for f in before.findings)
    assert {f.kind for f in before.findings} == {"purchases-view"}
    assert "session cs_open: credits_reversed is 0 in the view, 500 replayed" in details
    assert "session cs_won: updated_at is" in details
    assert after.findings == []


async def test_the_migration_shows_pending_a_mismatch_the_first_release_left_expired(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    await open_account(books, "acct_dave", 100)
    session = CheckoutSession.request(
        session_id="cs_late", account_id="acct_dave", credits=100, amount=100, currency="usd",
        checkout_url="u", expires_at=0,
    )  # fmt: skip
    session.expire()
    session.pay(payment_intent="pi_late", amount_paid=99, currency="usd")
    await save(books, session)
    await books.uow.committer.stop()
    await caught_up(isolated_db.store)
    # As the first release projected it: the mismatch kept the row's status.
    await isolated_db.pool.execute("UPDATE purchases SET status = 'expired'")
    [sql] = [sql for version, _, sql in available_migrations() if version == 24]

    before = await verify(isolated_db.pool)
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()
    after = await verify(isolated_db.pool)

    [finding] = before.findings
    assert "status is expired in the view, pending replayed" in finding.detail
    assert after.findings == []


def requested(session_id: str, credits: int, *, recovered: bool = False) -> CheckoutSession:
    """A pending session of acct_carol for ``credits`` at a cent each."""
    return CheckoutSession.request(
        session_id=session_id,
        account_id="acct_carol",
        credits=credits,
        amount=credits,
        currency="usd",
        checkout_url=f"http://127.0.0.1/pay/{session_id}",
        expires_at=0,
        recovered=recovered,
    )


async def test_a_session_of_credits_no_purchase_buys_is_a_purchase_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    """The service requests 100 to 10,000 credits, refused before Stripe is asked, and
    rebuilds a paid session it never recorded from its metadata only with 1 or more: the
    service's role may append any. Negative credits were found only by accident, once
    refunded ("it recorded 0 refunded, its facts -100"), and none else at all."""
    books = isolated_db.ledger()
    await open_account(books, "acct_carol", 100)
    forged = [
        requested("cs_minus", -100),
        requested("cs_many", 10_001),
        requested("cs_none", 0, recovered=True),
    ]
    await save(books, *forged)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id, f.version, f.detail) for f in report.findings] == [
        ("purchase-mismatch", "acct_carol", 1, f"session {detail}")
        for detail in (
            "cs_minus was requested for -100 credits: a purchase is 100 to 10,000 credits",
            "cs_many was requested for 10001 credits: a purchase is 100 to 10,000 credits",
            "cs_none was rebuilt from its metadata for 0 credits: a session is of 1 credit "
            "or more, requested or rebuilt from its metadata",
        )
    ] + [  # its amount of -100 makes its facts refund that much: what was found before
        ("adjustment-mismatch", "acct_carol", None, "session cs_minus: it recorded 0 "
         "refunded, its facts -100"),
    ]  # fmt: skip
    await books.uow.committer.stop()


async def test_sessions_rebuilt_from_metadata_of_any_credits_verify_clean(
    isolated_db: IsolatedDatabase,
) -> None:
    """A session rebuilt from a paid session's metadata takes its credits from there (1 or
    more): so did one recorded before CheckoutRequested kept ``recovered`` (version 1), which
    its upcast reads as requested."""
    books = isolated_db.ledger()
    await open_account(books, "acct_carol", 100)
    await save(books, requested("cs_small", 50, recovered=True), requested("cs_old", 20_000))
    await books.uow.committer.stop()
    await rewrite_stream(
        isolated_db.url,
        checkout_stream_id("cs_old"),
        1,
        '"recovered":false,"class_version":2}',
        '"recovered":true}',
    )
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert report.findings == []
    old = await books.repository.get(CheckoutSession, checkout_stream_id("cs_old"), fresh=True)
    assert (old.credits, old.recovered) == (20_000, False)  # upcast: read as requested


async def long_account(books: Ledger, account_id: str, events: int) -> CreditAccount:
    """An account with ``events`` events, written one command at a time (snapshots taken)."""
    account = await open_account(books, account_id, 100_000)
    # An open hold and a threshold: snapshots keep structs and None as well as numbers.
    account.place_hold("hold_1", 50, "render", datetime(2999, 1, 1, tzinfo=UTC))
    account.set_low_balance_threshold(None if events % 2 else 10)
    await save(books, account)
    for _ in range(events - 3):
        account.spend(1, "work")
        await save(books, account)
    return account


async def test_snapshots_are_checked_against_the_replay_and_a_forged_one_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    account = await long_account(books, "acct_long", SNAPSHOT_EVERY + 30)
    await long_account(books, "acct_short", 10)
    await books.uow.committer.stop()
    await caught_up(isolated_db.store)
    stream = account_stream_id("acct_long")

    clean = await verify(isolated_db.pool)

    assert clean.findings == []
    assert clean.snapshots == 1
    # Forged: the real snapshot made richer, and copies of it put where none was taken.
    await tamper(
        isolated_db.url,
        """UPDATE snapshots SET state = convert_to(replace(convert_from(state, 'UTF8'),
               '"topup_balance":', '"topup_balance":1'), 'UTF8')
           WHERE originator_id = $1 AND originator_version = $2""",
        stream,
        SNAPSHOT_EVERY,
    )
    for version in (SNAPSHOT_EVERY - 50, account.version + 1):
        await tamper(
            isolated_db.url,
            """INSERT INTO snapshots (originator_id, originator_version, topic, state,
                                      event_recorded_at)
               SELECT originator_id, $2, topic, state, event_recorded_at FROM snapshots
               WHERE originator_id = $1 AND originator_version = $3""",
            stream,
            version,
            SNAPSHOT_EVERY,
        )

    report = await verify(isolated_db.pool)

    assert {f.kind for f in report.findings} == {"snapshot-mismatch"}
    assert {f.account_id for f in report.findings} == {"acct_long"}
    by_version: dict[int | None, list[str]] = {}
    for finding in report.findings:
        by_version.setdefault(finding.version, []).append(finding.detail)
    assert sorted(by_version, key=lambda v: v or 0) == [
        SNAPSHOT_EVERY - 50,
        SNAPSHOT_EVERY,
        account.version + 1,
    ]
    [richer] = by_version[SNAPSHOT_EVERY]
    assert richer.startswith(f"the snapshot at version {SNAPSHOT_EVERY} has topup_balance 1")
    early = by_version[SNAPSHOT_EVERY - 50]
    assert any(" has allowance_remaining 99903, the events make 99953" in d for d in early)
    assert any(" has _modified_on " in d for d in early)
    [late] = by_version[account.version + 1]
    assert "which the stream never reached" in late


TAKEN_BEFORE = {
    5: """UPDATE snapshots SET state = convert_to(jsonb_set(jsonb_set(
               convert_from(state, 'UTF8')::jsonb #- '{state,carried_repayable}',
               '{state,class_version}', '5'), ARRAY['state', 'holds', $2, 'repayable'], '50'
           )::text, 'UTF8') WHERE originator_id = $1""",
    6: """UPDATE snapshots SET state = convert_to(jsonb_set(jsonb_set(
               convert_from(state, 'UTF8')::jsonb, '{state,carried_repayable}', '50'),
               '{state,class_version}', '6'
           )::text, 'UTF8') WHERE originator_id = $1 AND $2::text IS NOT NULL""",
}
"""A snapshot as version 5 took it (the hold's own figure, none for them all) and as 6 (one
figure any carried share may repay)."""


@pytest.mark.parametrize("version", sorted(TAKEN_BEFORE))
async def test_a_snapshot_taken_before_shares_repaid_together_is_not_a_mismatch(
    isolated_db: IsolatedDatabase, version: int
) -> None:
    """A snapshot of version 5 keeps what each hold's share alone may repay, one of version 6
    what any carried share may (set by rules since changed), not what the carried shares
    may repay part by part: it loads with none, its
    hold then repays none (less than the rule allows), and the audit holds it to the rest of
    the replay, not to that figure, which only the events tell; nor the next snapshot of the
    account so loaded, which keeps none too (the audit reported it a mismatch)."""
    books = isolated_db.ledger()
    account_id = "acct_old_snapshot"
    await open_account(books, account_id, 1000)
    await books.execute(
        PlaceHold(
            account_id=account_id,
            amount=1000,
            expires_in_seconds=600,
            reason="job",
            idempotency_key="h",
        )
    )
    await pay(books, "cs_old", account_id, 500, "pi_old")
    await books.execute(  # top-ups: the allowance is held
        SpendCredits(account_id=account_id, amount=50, reason="work", idempotency_key="s")
    )
    await refund(books, "pi_old", 500)  # 50 owed
    await books.execute(ResetMonth(account_id=account_id, period="2099-01"))
    account: CreditAccount = await books.account(account_id, fresh=True)
    [hold_id] = account.holds
    assert repayable_by(account.carried_repayable, account.hold(hold_id).period) == 50
    while account.version < SNAPSHOT_EVERY + 2:
        account.spend(1, "work")
        await save(books, account)
    await books.uow.committer.stop()
    stream = account_stream_id(account_id)
    await tamper(isolated_db.url, TAKEN_BEFORE[version], stream, hold_id)
    assert f'"class_version":{version}' in (
        await isolated_db.pool.fetchval(
            "SELECT convert_from(state, 'UTF8') FROM snapshots WHERE originator_id = $1", stream
        )
    ).replace(" ", "")
    books = isolated_db.ledger()
    loaded: CreditAccount = await books.account(account_id, fresh=True)
    assert loaded.carried_repayable == ()
    while loaded.version < 2 * SNAPSHOT_EVERY + 2:  # a snapshot of version 7, keeping none
        loaded.spend(1, "work")
        await save(books, loaded)
    released = await books.execute(
        SettleHold(account_id=account_id, hold_id=hold_id, outcome="released")
    )
    await books.uow.committer.stop()
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert released.balance == 1000 - 50 - (2 * SNAPSHOT_EVERY + 2 - 6)  # the 50 owed stand
    assert report.findings == []
    assert report.snapshots == 2


async def test_a_snapshot_that_lets_carried_shares_repay_more_than_the_events_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """Less of a debt repayable than the replay gives is a snapshot's older figure (above);
    more would let a hold make credits, and is a mismatch."""
    books = isolated_db.ledger()
    account_id = "acct_forged_repayable"
    await open_account(books, account_id, 1000)
    await books.execute(
        PlaceHold(
            account_id=account_id,
            amount=1000,
            expires_in_seconds=600,
            reason="job",
            idempotency_key="h",
        )
    )
    await books.execute(ResetMonth(account_id=account_id, period="2099-01"))  # nothing owed
    account: CreditAccount = await books.account(account_id, fresh=True)
    assert account.carried_repayable == ()
    [hold] = account.holds.values()
    while account.version < SNAPSHOT_EVERY + 2:
        account.set_low_balance_threshold(account.version)
        await save(books, account)
    await books.uow.committer.stop()
    await tamper(
        isolated_db.url,
        """UPDATE snapshots SET state = convert_to(jsonb_set(
               convert_from(state, 'UTF8')::jsonb, '{state,carried_repayable}',
               jsonb_build_array(jsonb_build_object('origin', $2::text, 'amount', 500))
           )::text, 'UTF8') WHERE originator_id = $1""",
        account_stream_id(account_id),
        hold.period,
    )
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert [f.kind for f in report.findings] == ["snapshot-mismatch"]
    assert (
        f"has carried_repayable (RepayablePart(origin='{hold.period}', amount=500),), "
        "the events make ()"
    ) in report.findings[0].detail


async def kept_for_held_topups(
    books: Ledger, account_id: str, purchases: tuple[int, ...], refunded: int
) -> str:
    """An account that spent 990 of its allowance and holds the other 10 for a while, a hold
    of its top-ups (``purchases``, paid as ``pi_<n>``), the last purchase refunded for
    ``refunded`` (the hold's top-ups unbacked that much), and a reset that keeps the 10 of
    the allowance for them. Returns the hold's id."""
    await open_account(books, account_id, 1000)
    await books.execute(
        SpendCredits(account_id=account_id, amount=990, reason="work", idempotency_key="s0")
    )
    await books.execute(
        PlaceHold(
            account_id=account_id,
            amount=10,
            expires_in_seconds=600,
            reason="the allowance",
            idempotency_key="a",
        )
    )
    account: CreditAccount = await books.account(account_id, fresh=True)
    [allowance_hold] = account.holds
    for n, credits in enumerate(purchases):
        await pay(books, f"cs_kept_{n}", account_id, credits, f"pi_{n}")
    await books.execute(
        PlaceHold(
            account_id=account_id,
            amount=sum(purchases),
            expires_in_seconds=600,
            reason="job",
            idempotency_key="h",
        )
    )
    await books.execute(
        SettleHold(account_id=account_id, hold_id=allowance_hold, outcome="released")
    )
    await refund(books, f"pi_{len(purchases) - 1}", refunded)
    await books.execute(ResetMonth(account_id=account_id, period="2099-01"))  # keeps 10
    account = await books.account(account_id, fresh=True)
    assert account.kept_for_holds == 10
    [hold_id] = account.holds
    return hold_id


async def test_a_snapshot_taken_before_kept_parts_is_not_a_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    """A snapshot of version 7 does not keep which held top-ups what resets kept stands for:
    it loads standing for the last of them, and a capture of the first then spends none of
    it, taking top-ups below zero (poorer than the rule, never richer); the audit holds the
    settlement and the snapshot to the rest, and the next snapshot of the account so loaded
    too (its parts stand for later top-ups than the replay's)."""
    books = isolated_db.ledger()
    account_id = "acct_kept_v7"
    hold_id = await kept_for_held_topups(books, account_id, (500,), 500)
    account: CreditAccount = await books.account(account_id, fresh=True)
    assert account.kept_parts == (KeptPart(ahead=0, amount=10),)
    while account.version < SNAPSHOT_EVERY + 2:
        account.spend(1, "work")
        await save(books, account)
    await books.uow.committer.stop()
    stream = account_stream_id(account_id)
    await tamper(
        isolated_db.url,
        """UPDATE snapshots SET state = convert_to(jsonb_set(
               convert_from(state, 'UTF8')::jsonb #- '{state,kept_parts}',
               '{state,class_version}', '7'
           )::text, 'UTF8') WHERE originator_id = $1""",
        stream,
    )
    books = isolated_db.ledger()
    loaded: CreditAccount = await books.account(account_id, fresh=True)
    assert loaded.kept_parts == (KeptPart(ahead=490, amount=10),)
    while loaded.version < 2 * SNAPSHOT_EVERY + 2:  # a snapshot of version 8, kept for the last
        loaded.spend(1, "work")
        await save(books, loaded)
    await books.execute(
        SettleHold(account_id=account_id, hold_id=hold_id, outcome="captured", amount=10)
    )
    await books.uow.committer.stop()
    await caught_up(isolated_db.store)
    settled: CreditAccount = await books.account(account_id, fresh=True)

    report = await verify(isolated_db.pool)

    assert (settled.topup_balance, settled.kept_for_holds) == (-10, 0)  # the 10 lapsed
    assert report.findings == []
    assert report.snapshots == 2


async def test_a_snapshot_with_kept_credits_for_earlier_topups_than_the_events_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """Kept for later held top-ups than the replay gives is a snapshot's older shape (above);
    for earlier ones, a capture would spend it sooner, on top-ups it was not kept for (credits
    made), and is a mismatch."""
    books = isolated_db.ledger()
    account_id = "acct_forged_kept"
    await kept_for_held_topups(books, account_id, (490, 10), 10)
    account: CreditAccount = await books.account(account_id, fresh=True)
    assert account.kept_parts == (KeptPart(ahead=490, amount=10),)
    while account.version < SNAPSHOT_EVERY + 2:
        account.spend(1, "work")
        await save(books, account)
    await books.uow.committer.stop()
    await tamper(
        isolated_db.url,
        """UPDATE snapshots SET state = convert_to(jsonb_set(
               convert_from(state, 'UTF8')::jsonb, '{state,kept_parts}',
               jsonb_build_array(jsonb_build_object('ahead', 0, 'amount', 10))
           )::text, 'UTF8') WHERE originator_id = $1""",
        account_stream_id(account_id),
    )
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert [f.kind for f in report.findings] == ["snapshot-mismatch"]
    assert (
        "has kept_parts (KeptPart(ahead=0, amount=10),), "
        "the events make (KeptPart(ahead=490, amount=10),)"
    ) in report.findings[0].detail


async def version_holding(db: IsolatedDatabase, stream: Any, text: str) -> int:
    """The version of the stream's event whose state holds ``text``."""
    version = await db.pool.fetchval(
        """SELECT originator_version FROM stored_events WHERE originator_id = $1
           AND position($2 in convert_from(state, 'UTF8')) > 0""",
        stream,
        text,
    )
    assert version is not None, text
    return int(version)


async def test_a_chargeback_decided_before_its_share_was_rounded_up_verifies_clean(
    isolated_db: IsolatedDatabase,
) -> None:
    """At 10 a credit, 405 refunded take back 40 credits and a lost chargeback of the other
    595 the other 60 (rounded up); purchases disputed before took 59 (rounded down), and
    the audit would have called every such one a mismatch after the upgrade."""
    books = isolated_db.ledger(pricing=Pricing(unit_amount=10, currency="usd"))
    await open_account(books, "acct_dora", 100)
    payment = msgspec.structs.replace(
        paid("cs_round", "acct_dora", 100, "pi_round"), amount_total=1000, unit_amount=10
    )
    await books.apply_payment_event(payment.event_id, "checkout.session.completed", payment)
    await refund(books, "pi_round", 405)
    await dispute(books, "pi_round", "dp_round", "lost", 595)
    await books.uow.committer.stop()
    account = await books.account("acct_dora", fresh=True)
    assert account.topup_balance == 0  # all the money back, every credit back
    # As the rule before recorded it: the chargeback took 59.
    for stream, text in (
        (checkout_stream_id("cs_round"), '"credits_reversed":60'),
        (account_stream_id("acct_dora"), '"credits":60'),
    ):
        version = await version_holding(isolated_db, stream, text)
        await rewrite_stream(isolated_db.url, stream, version, text, text.replace("60", "59"))
    await rebuild_views(isolated_db)

    report = await verify(isolated_db.pool)

    assert report.findings == []
    reversed_then = await isolated_db.pool.fetchval(
        "SELECT credits_reversed FROM purchases WHERE session_id = 'cs_round'"
    )
    assert reversed_then == 59

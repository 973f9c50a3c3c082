"""``ledger audit verify`` and ``export`` on a database of their own."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import msgspec
import pytest

from audit.verify import Verifier, verify
from ledger.commands import GrantCredits, RecordCheckout, ResetMonth, SpendCredits
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import (
    CheckoutPaid,
    CreditsSpent,
    reset_command_time,
    set_command_time,
)
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.payment_events import CheckoutChange, CheckoutEvent, DisputeEvent, RefundEvent
from ledger.service import Ledger
from tests.conftest import IsolatedDatabase
from tests.support.cli import ledger
from tests.support.events import caught_up
from tests.support.ledger import open_account, save

# Every audit here runs twice: replayed in this process, and split over two (--jobs 2).
pytestmark = pytest.mark.usefixtures("audit_jobs")


def paid(session_id: str, account_id: str, credits: int, intent: str) -> CheckoutEvent:
    return CheckoutEvent(
        event_id=f"evt_{session_id}",
        change=CheckoutChange.COMPLETED,
        session_id=session_id,
        paid=True,
        payment_intent=intent,
        amount_total=credits,
        currency="usd",
        account_id=account_id,
        credits=credits,
        checkout_url=None,
        expires_at=None,
        marked=True,  # a session the ledger made
    )


async def build_history(db: IsolatedDatabase) -> Ledger:
    """Two accounts with purchases, spends, a reset, a refund and a dispute."""
    books = db.ledger()
    for n, account_id in enumerate(("acct_alice", "acct_bob")):
        await open_account(books, account_id, 1000)
        # A session the store never saw is recovered from its metadata: a real checkout.
        for suffix, credits in (("a", 700), ("b", 300)):
            event = paid(f"cs_{n}_{suffix}", account_id, credits, f"pi_{n}_{suffix}")
            await books.apply_payment_event(event.event_id, "checkout.session.completed", event)
        for k in range(12):
            await books.execute(
                SpendCredits(
                    account_id=account_id,
                    amount=90 + k,
                    reason="work",
                    idempotency_key=f"{account_id}-{k}",
                )
            )
        await books.execute(ResetMonth(account_id=account_id, period="2999-01"))
    refund = RefundEvent(event_id="evt_refund", payment_intent="pi_0_a", amount_refunded=200)
    await books.apply_payment_event(refund.event_id, "charge.refunded", refund)
    dispute = DisputeEvent(
        event_id="evt_dispute",
        dispute_id="dp_1",
        payment_intent="pi_1_b",
        status="needs_response",
        amount=300,
    )
    await books.apply_payment_event(dispute.event_id, "charge.dispute.created", dispute)
    await caught_up(db.store)
    await books.uow.committer.stop()  # a later write starts it again
    return books


async def tamper(admin_url: str, sql: str, *args: object) -> None:
    """Change rows as a superuser could, bypassing the trigger (the service's role cannot)."""
    connection = await asyncpg.connect(admin_url)
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute(sql, *args)
    finally:
        await connection.close()


async def test_a_faithful_ledger_verifies_clean(isolated_db: IsolatedDatabase) -> None:
    await build_history(isolated_db)

    report = await verify(isolated_db.pool)

    assert report.findings == []
    assert report.accounts == 2
    assert report.checkout_sessions == 4
    assert report.events == await isolated_db.pool.fetchval("SELECT count(*) FROM stored_events")


async def test_a_session_never_recorded_without_the_ledgers_mark_verifies_under_review(
    isolated_db: IsolatedDatabase,
) -> None:
    """Recorded as a mismatch of what was asked, its purchase pending with needs_review."""
    books = await build_history(isolated_db)
    theirs = paid("cs_another_product", "acct_alice", 500, "pi_another_product")
    theirs = msgspec.structs.replace(theirs, marked=False)
    await books.apply_payment_event(theirs.event_id, "checkout.session.completed", theirs)
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()

    report = await verify(isolated_db.pool)

    assert report.findings == []
    assert report.checkout_sessions == 5
    needs_review = "SELECT needs_review FROM purchases WHERE session_id = 'cs_another_product'"
    assert await isolated_db.pool.fetchval(needs_review) is True


async def test_views_behind_the_events_are_checked_as_they_stood(
    isolated_db: IsolatedDatabase,
) -> None:
    """Events the views have not read yet change the replayed balances, not the views: each
    account is compared with the views at the view's own position, inside its stream."""
    books = await build_history(isolated_db)
    for account_id in ("acct_alice", "acct_bob"):
        await books.execute(
            SpendCredits(
                account_id=account_id,
                amount=7,
                reason="after",
                idempotency_key=f"late-{account_id}",
            )
        )
    await books.uow.committer.stop()
    behind = await isolated_db.pool.fetchval("SELECT max(notification_id) FROM stored_events")

    report = await verify(isolated_db.pool)

    assert report.findings == []
    assert all(0 < position < behind for position in report.projection_positions.values())


async def test_one_changed_byte_is_reported_with_its_account_and_version(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    stream = account_stream_id("acct_bob")
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET state = convert_to(
               replace(convert_from(state, 'UTF8'), '"amount":95', '"amount":94'), 'UTF8')
           WHERE originator_id = $1 AND originator_version = 9""",
        stream,
    )

    report = await verify(isolated_db.pool)

    [finding] = [f for f in report.findings if f.kind == "hash-mismatch"]
    assert finding.account_id == "acct_bob"
    assert finding.version == 9
    assert "CreditsSpent was changed after it was written" in finding.detail


async def test_a_changed_amount_also_shows_what_differs_from_the_views(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET state = convert_to(
               replace(convert_from(state, 'UTF8'), '"from_topup":45', '"from_topup":5'),
               'UTF8')
           WHERE originator_id = $1 AND originator_version = 14""",
        account_stream_id("acct_bob"),
    )

    report = await verify(isolated_db.pool)

    assert {f.kind for f in report.findings} == {
        "hash-mismatch",
        "split-mismatch",  # the spend's parts no longer add up to its amount
        "balances-view",
        "statement-view",
        "notifications-view",  # the alerts keep their own copy of the buckets
    }
    [balances] = [f for f in report.findings if f.kind == "balances-view"]
    assert balances.account_id == "acct_bob"
    assert "topup_balance is 554 in the view, 594 replayed" in balances.detail


async def test_a_removed_event_and_a_retimed_event_are_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    alice = account_stream_id("acct_alice")
    await tamper(
        isolated_db.url,
        "DELETE FROM stored_events WHERE originator_id = $1 AND originator_version = 5",
        alice,
    )
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET recorded_at = recorded_at - $2::interval
           WHERE originator_id = $1 AND originator_version = 2""",
        alice,
        timedelta(days=1),
    )

    report = await verify(isolated_db.pool)

    gaps = [f for f in report.findings if f.kind == "version-gap"]
    retimed = [f for f in report.findings if f.kind == "hash-mismatch"]
    assert [(f.account_id, f.version) for f in gaps] == [("acct_alice", 6)]
    assert "later events are not replayed" in gaps[0].detail
    assert [(f.account_id, f.version) for f in retimed] == [("acct_alice", 2)]
    # One finding for the gap, not one for every event after it that could not be replayed.
    assert [f for f in report.findings if f.kind == "unreadable"] == []
    [earlier] = [f for f in report.findings if f.kind == "recorded-out-of-order"]
    assert (earlier.account_id, earlier.version) == ("acct_alice", 2)


async def test_two_events_of_a_stream_that_traded_places_are_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """Two spends of one stream reordered, by their contents (each row keeps its version and
    hash) or by their versions (each keeps its content and hash)."""
    await build_history(isolated_db)
    alice, bob = account_stream_id("acct_alice"), account_stream_id("acct_bob")
    await tamper(
        isolated_db.url,
        """UPDATE stored_events e SET state = o.state, topic = o.topic FROM stored_events o
           WHERE e.originator_id = $1 AND o.originator_id = $1
             AND e.originator_version + o.originator_version = 19
             AND e.originator_version IN (9, 10)""",
        bob,
    )
    await tamper(
        isolated_db.url,
        f"""UPDATE stored_events SET originator_version = -originator_version
            WHERE originator_id = '{alice}' AND originator_version IN (9, 10);
            UPDATE stored_events SET originator_version = 19 + originator_version
            WHERE originator_id = '{alice}' AND originator_version IN (-9, -10)""",
    )

    report = await verify(isolated_db.pool)

    assert sorted(
        (f.account_id, f.version) for f in report.findings if f.kind == "hash-mismatch"
    ) == [("acct_bob", 9), ("acct_bob", 10)]
    # Version 10 after 8, 9 after 10, 11 after 9.
    assert sorted(
        (f.account_id, f.version) for f in report.findings if f.kind == "version-gap"
    ) == [("acct_alice", 9), ("acct_alice", 10), ("acct_alice", 11)]


async def test_a_middle_event_removed_and_the_later_ones_renumbered_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """Versions without a gap: each later event's hash covers the version it was written at
    and the hash of the event it followed."""
    await build_history(isolated_db)
    bob = account_stream_id("acct_bob")
    last = await isolated_db.pool.fetchval(
        "SELECT max(originator_version) FROM stored_events WHERE originator_id = $1", bob
    )
    await tamper(
        isolated_db.url,
        "DELETE FROM stored_events WHERE originator_id = $1 AND originator_version = 9",
        bob,
    )
    await tamper(  # through negative versions: no row meets its neighbour's key on the way
        isolated_db.url,
        f"""UPDATE stored_events SET originator_version = 1 - originator_version
            WHERE originator_id = '{bob}' AND originator_version > 9;
            UPDATE stored_events SET originator_version = -originator_version
            WHERE originator_id = '{bob}' AND originator_version < 0""",
    )

    report = await verify(isolated_db.pool)

    assert sorted(
        (f.account_id, f.version) for f in report.findings if f.kind == "hash-mismatch"
    ) == [("acct_bob", version) for version in range(9, last)]
    assert not [f for f in report.findings if f.kind == "version-gap"]


async def test_two_streams_whose_ids_were_swapped_fail_the_hash_at_every_event(
    isolated_db: IsolatedDatabase,
) -> None:
    # Versions, times, states and each previous hash as they were: only the id the hash
    # covers is another stream's (the replay hashes each stream's id bytes, made once).
    await build_history(isolated_db)
    alice, bob = account_stream_id("acct_alice"), account_stream_id("acct_bob")
    counts = {
        stream: await isolated_db.pool.fetchval(
            "SELECT count(*) FROM stored_events WHERE originator_id = $1", stream
        )
        for stream in (alice, bob)
    }
    swapped = uuid4()
    await tamper(
        isolated_db.url,
        f"""UPDATE stored_events SET originator_id = '{swapped}' WHERE originator_id = '{alice}';
            UPDATE stored_events SET originator_id = '{alice}' WHERE originator_id = '{bob}';
            UPDATE stored_events SET originator_id = '{bob}' WHERE originator_id = '{swapped}'""",
    )

    report = await verify(isolated_db.pool)

    mismatched = [(f.stream_id, f.version) for f in report.findings if f.kind == "hash-mismatch"]
    assert sorted(mismatched) == sorted(
        [(str(bob), v) for v in range(1, counts[alice] + 1)]
        + [(str(alice), v) for v in range(1, counts[bob] + 1)]
    )


async def test_an_event_that_cannot_be_read_is_one_finding_not_one_per_later_event(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET state = convert_to('not json', 'UTF8')
           WHERE originator_id = $1 AND originator_version = 5""",
        account_stream_id("acct_alice"),
    )

    report = await verify(isolated_db.pool)

    [unreadable] = [f for f in report.findings if f.kind == "unreadable"]
    assert (unreadable.account_id, unreadable.version) == ("acct_alice", 5)
    assert "later events are not replayed" in unreadable.detail
    # Its claims are counted against nothing: it has events, though not all replayed.
    assert [f for f in report.findings if f.kind == "claim-mismatch"] == []


async def test_an_event_of_no_known_type_or_a_field_of_another_type_is_unreadable(
    isolated_db: IsolatedDatabase,
) -> None:
    """The replay's own lookup of each topic's decoder: a topic that names no class, and a
    state its class's fast decoder refuses (the general path says why), stop the stream."""
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET topic = 'ledger.domain.events:Nothing'
           WHERE originator_id = $1 AND originator_version = 5""",
        account_stream_id("acct_alice"),
    )
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET state = convert_to(
               replace(convert_from(state, 'UTF8'), '"amount":95', '"amount":"lots"'), 'UTF8')
           WHERE originator_id = $1 AND originator_version = 9""",
        account_stream_id("acct_bob"),
    )

    report = await verify(isolated_db.pool)

    unreadable = {
        (f.account_id, f.version): f.detail for f in report.findings if f.kind == "unreadable"
    }
    assert sorted(unreadable) == [("acct_alice", 5), ("acct_bob", 9)]
    assert "Nothing" in unreadable["acct_alice", 5]
    assert "Expected `int`, got `str`" in unreadable["acct_bob", 9]
    assert all("later events are not replayed" in d for d in unreadable.values())
    mismatched = [(f.account_id, f.version) for f in report.findings if f.kind == "hash-mismatch"]
    assert sorted(mismatched) == [("acct_alice", 5), ("acct_bob", 9)]


async def test_an_account_opened_again_mid_stream_cannot_be_replayed(
    isolated_db: IsolatedDatabase,
) -> None:
    """A creation event makes an aggregate and cannot be applied to one: the replay must not
    take it as an ordinary event, which would open the account afresh without a finding."""
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE stored_events e SET topic = first.topic, state = first.state
           FROM stored_events first
           WHERE e.originator_id = $1 AND e.originator_version = 5
             AND first.originator_id = $1 AND first.originator_version = 1""",
        account_stream_id("acct_alice"),
    )

    report = await verify(isolated_db.pool)

    [unreadable] = [f for f in report.findings if f.kind == "unreadable"]
    assert (unreadable.account_id, unreadable.version) == ("acct_alice", 5)
    assert "later events are not replayed" in unreadable.detail


async def test_a_spend_claim_deleted_and_its_request_retried_spends_twice_and_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """A claim carries no hash: with it gone, a retry of its Idempotency-Key is a new spend,
    and the two spends' events are as right as any two. Only the count of spend claims, one
    per spend recorded, shows it; and a claim with no spend (one inserted: its request is
    answered and never recorded) as well."""
    books = await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        "DELETE FROM claims WHERE scope = 'spend/acct_alice' AND key = 'acct_alice-3'",
    )
    spent = await books.execute(
        SpendCredits(
            account_id="acct_alice", amount=93, reason="work", idempotency_key="acct_alice-3"
        )
    )
    await books.uow.committer.stop()
    assert spent.amount == 93  # spent again: the service had no claim to answer from
    await tamper(
        isolated_db.url,
        """INSERT INTO claims (scope, key, request_hash, response)
           SELECT scope, 'never-spent', request_hash, response FROM claims
           WHERE scope = 'spend/acct_bob' AND key = 'acct_bob-0'""",
    )

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id) for f in report.findings] == [
        ("claim-mismatch", "acct_alice"),
        ("claim-mismatch", "acct_bob"),
    ]
    alice, bob = (f.detail for f in report.findings)
    assert "12 spend claims, 13 CreditsSpent" in alice
    assert "13 spend claims, 12 CreditsSpent" in bob


async def test_claims_for_an_account_with_no_events_are_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """Claims were counted against each account's events, for the accounts that have
    some: a spend claim inserted for an account that does not exist answered 200 on every
    retry of its key, and the audit said OK (an audit review)."""
    await build_history(isolated_db)
    assert (await verify(isolated_db.pool)).findings == []
    await tamper(
        isolated_db.url,
        """INSERT INTO claims (scope, key, request_hash, response)
           SELECT replace(scope, 'acct_bob', 'acct_nobody'), key, request_hash, response
           FROM claims WHERE scope = 'spend/acct_bob' AND key IN ('acct_bob-0', 'acct_bob-1')""",
    )

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id, f.detail) for f in report.findings] == [
        (
            "claim-mismatch",
            "acct_nobody",
            "2 spend claims for an account with no events: each answers its key's request, "
            "which was never recorded",
        )
    ] + [  # copied, their answers name acct_bob
        (
            "claim-mismatch",
            "acct_nobody",
            f"the answer kept for spend key 'acct_bob-{n}' names account acct_bob, not the "
            "account its command wrote: a retry of the key is given it",
        )
        for n in (0, 1)
    ]


async def test_a_purchase_keys_answer_naming_another_accounts_session_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """A purchase retried under its Idempotency-Key is answered from its claim, where to pay:
    an answer changed to another account's session would have the customer pay for it, and
    credit that account."""
    books = await build_history(isolated_db)
    for account_id in ("acct_alice", "acct_bob"):
        await books.execute(
            RecordCheckout(
                account_id=account_id,
                credits=500,
                session_id=f"cs_keyed_{account_id}",
                checkout_url=f"https://checkout.invalid/{account_id}",
                amount=500,
                currency="usd",
                expires_at=1_790_000_000,
                idempotency_key="buy-1",
            )
        )
    await books.uow.committer.stop()
    assert (await verify(isolated_db.pool)).findings == []
    await tamper(
        isolated_db.url,
        """UPDATE claims SET response = (SELECT response FROM claims
                                         WHERE scope = 'purchase/acct_bob' AND key = 'buy-1')
           WHERE scope = 'purchase/acct_alice' AND key = 'buy-1'""",
    )

    report = await verify(isolated_db.pool)

    [finding] = report.findings
    assert (finding.kind, finding.account_id) == ("claim-mismatch", "acct_alice")
    assert "names session cs_keyed_acct_bob, acct_bob's" in finding.detail


async def test_a_spend_keys_answer_naming_another_account_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """A spend retried under its Idempotency-Key is given its claim's answer: one rewritten
    to name another account tells the caller that account's balances, and the claims were
    only counted. The same answer written with other spacing names its account still."""
    await build_history(isolated_db)
    respaced = """UPDATE claims SET response = convert_to(
                      (convert_from(response, 'UTF8')::jsonb)::text, 'UTF8')
                  WHERE scope = 'spend/acct_bob' AND key = 'acct_bob-3'"""
    await tamper(isolated_db.url, respaced)
    assert b'"account_id": "acct_bob"' in await isolated_db.pool.fetchval(
        "SELECT response FROM claims WHERE scope = 'spend/acct_bob' AND key = 'acct_bob-3'"
    )
    assert (await verify(isolated_db.pool)).findings == []
    await tamper(
        isolated_db.url,
        """UPDATE claims SET response = convert_to(replace(convert_from(response, 'UTF8'),
                   '"account_id":"acct_alice"', '"account_id":"acct_bob"'), 'UTF8')
           WHERE scope = 'spend/acct_alice' AND key = 'acct_alice-2'""",
    )

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id, f.detail) for f in report.findings] == [
        (
            "claim-mismatch",
            "acct_alice",
            "the answer kept for spend key 'acct_alice-2' names account acct_bob, not the "
            "account its command wrote: a retry of the key is given it",
        )
    ]


async def test_a_spend_keys_answer_naming_its_account_and_then_another_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """The audit searched each answer's bytes for ``"account_id":"<its account>"``: an
    answer that holds it and names another account after it (a second ``account_id``, which
    a JSON decoder reads as its last; the key spelt with an escape; the account's pattern
    inside a nested object and the answer's own ``account_id`` spaced) passed the search,
    and a retry of its key is given the other account's balances. Such answers are read:
    one of the service's own that looks so names its account all the same."""
    books = await build_history(isolated_db)
    for n, reason in enumerate(("account_id", 'said "account_id', "C:\\users \x01")):
        await books.execute(
            SpendCredits(account_id="acct_alice", amount=1, reason=reason, idempotency_key=str(n))
        )
    await books.uow.committer.stop()
    assert (await verify(isolated_db.pool)).findings == []
    rewritten = {
        "acct_alice-2": """convert_to(rtrim(convert_from(response, 'UTF8'), '}')
                               || ',"account_id":"acct_bob"}', 'UTF8')""",
        "acct_alice-4": """convert_to(rtrim(convert_from(response, 'UTF8'), '}')
                               || ',"\\u0061ccount_id":"acct_bob"}', 'UTF8')""",
        "acct_alice-6": """convert_to('{"note":{"account_id":"acct_alice"},' || substr(
                               ((convert_from(response, 'UTF8')::jsonb
                                 || '{"account_id": "acct_bob"}')::text), 2), 'UTF8')""",
    }
    for key, response in rewritten.items():
        await tamper(
            isolated_db.url,
            f"UPDATE claims SET response = {response} WHERE scope = 'spend/acct_alice' "
            "AND key = $1",
            key,
        )
        answer = await isolated_db.pool.fetchval(
            "SELECT response FROM claims WHERE scope = 'spend/acct_alice' AND key = $1", key
        )
        assert b'"account_id":"acct_alice"' in answer
        assert msgspec.json.decode(answer)["account_id"] == "acct_bob"

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id, f.detail) for f in report.findings] == [
        (
            "claim-mismatch",
            "acct_alice",
            f"the answer kept for spend key {key!r} names account acct_bob, not the "
            "account its command wrote: a retry of the key is given it",
        )
        for key in rewritten
    ]


async def test_a_spend_saved_by_hand_keeps_the_answer_the_service_would(
    isolated_db: IsolatedDatabase,
) -> None:
    """``save`` (tests/support/ledger.py) claimed each spend, hold and grant with an empty
    answer, which the audit reads as one that cannot be read and leaves alone: its check that
    an answer names its claim's account never saw the claims of the tests that use it. Moved
    to another account, a saved spend's claim is counted there and its answer names acct_alice."""
    books = await build_history(isolated_db)
    account = await books.account("acct_alice")
    account.spend(5, "work")
    await save(books, account)
    await books.uow.committer.stop()
    key = await isolated_db.pool.fetchval(
        "SELECT key FROM claims WHERE scope = 'spend/acct_alice' AND key LIKE 'saved-%'"
    )
    await tamper(
        isolated_db.url,
        "UPDATE claims SET scope = 'spend/acct_bob' WHERE scope = 'spend/acct_alice' AND key = $1",
        key,
    )

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id) for f in report.findings] == [
        ("claim-mismatch", "acct_alice"),
        ("claim-mismatch", "acct_bob"),
        ("claim-mismatch", "acct_bob"),
    ]
    assert report.findings[2].detail == (
        f"the answer kept for spend key {key!r} names account acct_alice, not the account its "
        "command wrote: a retry of the key is given it"
    )


async def test_stripe_events_applied_again_after_their_claims_were_deleted_move_nothing(
    isolated_db: IsolatedDatabase,
) -> None:
    """Why the audit does not count Stripe event ids: with their claims gone, a payment, a
    refund and a dispute delivered again find the session paid, its refunded total and the
    dispute's status recorded already, and record nothing."""
    books = await build_history(isolated_db)
    events = await isolated_db.pool.fetchval("SELECT count(*) FROM stored_events")
    await tamper(isolated_db.url, "DELETE FROM claims WHERE scope = 'stripe-event'")
    refund = RefundEvent(event_id="evt_refund", payment_intent="pi_0_a", amount_refunded=200)
    dispute = DisputeEvent(
        event_id="evt_dispute",
        dispute_id="dp_1",
        payment_intent="pi_1_b",
        status="needs_response",
        amount=300,
    )
    for event, kind in (
        (paid("cs_0_a", "acct_alice", 700, "pi_0_a"), "checkout.session.completed"),
        (refund, "charge.refunded"),
        (dispute, "charge.dispute.created"),
    ):
        await books.apply_payment_event(event.event_id, kind, event)
    await books.uow.committer.stop()

    handled = "SELECT count(*) FROM claims WHERE scope = 'stripe-event'"
    assert await isolated_db.pool.fetchval(handled) == 3  # each handled again, not skipped
    assert await isolated_db.pool.fetchval("SELECT count(*) FROM stored_events") == events
    assert (await verify(isolated_db.pool)).findings == []


async def test_the_alerts_row_is_compared_with_its_stream_and_armed_alerts(
    isolated_db: IsolatedDatabase,
) -> None:
    """The projector finds an account's alerts row by its stream, and whether a low or
    depleted alert is armed decides if the next crossing sends one: an UPDATE of either (the
    row no longer followed, an alert never sent or sent again) passed."""
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE notifier_accounts SET stream_id = gen_random_uuid(),
                  low_armed = NOT low_armed, depleted_armed = NOT depleted_armed
           WHERE account_id = 'acct_alice'""",
    )

    report = await verify(isolated_db.pool)

    assert {(f.kind, f.account_id) for f in report.findings} == {
        ("notifications-view", "acct_alice")
    }
    assert sorted(f.detail.split(" is ")[0] for f in report.findings) == [
        "depleted_armed",
        "low_armed",
        "stream_id",
    ]


async def test_an_event_hidden_from_readers_by_its_transaction_id_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """The hash chain leaves transaction_id out; readers in commit order pass an event only
    once that id has ended. An id still to come hides the event from the feeds, the account
    histories and the projector, though replaying the rows finds nothing wrong."""
    await build_history(isolated_db)
    alice = account_stream_id("acct_alice")
    position = await isolated_db.pool.fetchval(
        """SELECT notification_id FROM stored_events
           WHERE originator_id = $1 AND originator_version = 5""",
        alice,
    )
    await tamper(
        isolated_db.url,
        """UPDATE stored_events
           SET transaction_id = (pg_current_xact_id()::text::bigint + 1000000)::text::xid8
           WHERE notification_id = $1""",
        position,
    )
    assert position not in [e.notification_id for e in await isolated_db.store.read_all(0, 1000)]

    report = await verify(isolated_db.pool)

    [hidden] = report.findings
    assert (hidden.kind, hidden.account_id, hidden.version, hidden.position) == (
        "hidden-event",
        "acct_alice",
        5,
        position,
    )
    assert "pass over it" in hidden.detail


async def test_many_hidden_events_are_reported_the_first_by_position_then_counted(
    isolated_db: IsolatedDatabase,
) -> None:
    """Hidden events of several streams (split over the parts at --jobs 2): the first ten by
    position each with its stream's account, then how many more and where the last is."""
    await build_history(isolated_db)
    hidden = await isolated_db.pool.fetch(
        """SELECT notification_id, originator_id, originator_version FROM stored_events
           WHERE originator_version > 1 ORDER BY notification_id"""
    )
    hidden = hidden[1::2]  # every other event of every stream but each stream's first
    assert len(hidden) > 12
    await tamper(
        isolated_db.url,
        """UPDATE stored_events
           SET transaction_id = (pg_current_xact_id()::text::bigint + 1000000)::text::xid8
           WHERE notification_id = any($1::bigint[])""",
        [row["notification_id"] for row in hidden],
    )
    accounts = dict(
        await isolated_db.pool.fetch(
            """SELECT originator_id, event_account_id(state) FROM stored_events
               WHERE originator_version = 1"""
        )
    )

    report = await verify(isolated_db.pool)

    assert {f.kind for f in report.findings} == {"hidden-event"}
    *each, more = report.findings
    assert [(f.position, f.stream_id, f.version, f.account_id) for f in each] == [
        (
            row["notification_id"],
            str(row["originator_id"]),
            row["originator_version"],
            accounts[row["originator_id"]],
        )
        for row in hidden[:10]
    ]
    assert {f.account_id for f in each} >= {"acct_alice", "acct_bob"}
    assert (more.position, more.account_id) == (None, None)
    assert more.detail == (
        f"{len(hidden) - 10} more events up to position {hidden[-1]['notification_id']} are "
        "hidden from readers in the same way"
    )


async def test_an_event_recorded_into_its_streams_past_is_reported_and_as_of_stops_before_it(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await build_history(isolated_db)
    bob = account_stream_id("acct_bob")
    last, third = await isolated_db.pool.fetchrow(
        """SELECT max(originator_version),
                  min(recorded_at) FILTER (WHERE originator_version = 3)
           FROM stored_events WHERE originator_id = $1""",
        bob,
    )
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET recorded_at = $3
           WHERE originator_id = $1 AND originator_version = $2""",
        bob,
        last,
        third,
    )

    report = await verify(isolated_db.pool)

    [moved] = [f for f in report.findings if f.kind == "recorded-out-of-order"]
    assert (moved.account_id, moved.version) == ("acct_bob", last)
    assert "written into the stream's past" in moved.detail
    # The events recorded up to that moment are versions 1-3 and the moved one: the
    # balance as of then is the first three's (it was an error, a 500 over HTTP).
    assert (await books.account_as_of("acct_bob", third)).version == 3


async def test_an_event_recorded_at_an_infinity_is_reported_not_a_crash(
    isolated_db: IsolatedDatabase,
) -> None:
    """The audit reads each time as the microseconds PostgreSQL keeps: an insider's
    'infinity' or '-infinity' is a number past any datetime, shown as datetime's ends."""
    await build_history(isolated_db)
    bob = account_stream_id("acct_bob")
    last = await isolated_db.pool.fetchval(
        "SELECT max(originator_version) FROM stored_events WHERE originator_id = $1", bob
    )
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET recorded_at = CASE originator_version
               WHEN 2 THEN 'infinity'::timestamptz ELSE '-infinity'::timestamptz END
           WHERE originator_id = $1 AND originator_version IN (2, $2)""",
        bob,
        last,
    )

    report = await verify(isolated_db.pool)

    found = {(f.kind, f.version) for f in report.findings if f.account_id == "acct_bob"}
    assert {("hash-mismatch", 2), ("hash-mismatch", last)} <= found
    moved = {f.version: f.detail for f in report.findings if f.kind == "recorded-out-of-order"}
    assert moved.keys() == {3, last}
    assert "(9999-12-31T23:59:59.999999+00:00)" in moved[3]
    assert moved[last].startswith("recorded at 0001-01-01T00:00:00+00:00")


async def test_a_view_position_past_the_stores_last_event_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    last = await isolated_db.pool.fetchval("SELECT max(notification_id) FROM stored_events")
    await tamper(
        isolated_db.url,
        "UPDATE projection_positions SET position = $1 WHERE name = 'balances'",
        last + 1000,
    )

    report = await verify(isolated_db.pool)

    [past] = [f for f in report.findings if f.kind == "projection-position"]
    assert f"the balances view is at position {last + 1000}" in past.detail


async def test_a_views_position_removed_while_its_rows_remain_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    await tamper(isolated_db.url, "DELETE FROM projection_positions WHERE name = 'statement'")

    report = await verify(isolated_db.pool)

    [gone] = [f for f in report.findings if f.kind == "projection-position"]
    assert "the statement view has rows and no position" in gone.detail


async def test_a_view_edited_by_hand_is_reported_field_by_field(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    await isolated_db.pool.execute(
        "UPDATE balances SET topup_balance = topup_balance + 1 WHERE account_id = 'acct_alice'"
    )

    report = await verify(isolated_db.pool)

    [finding] = report.findings
    assert finding.kind == "balances-view"
    assert finding.account_id == "acct_alice"
    assert "topup_balance is" in finding.detail


async def test_a_purchase_credited_twice_or_without_a_checkout_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await build_history(isolated_db)
    account = await books.account("acct_alice")
    account.purchase(session_id="cs_0_a", credits=700)  # bypassing the session: a bug's footprint
    account.purchase(session_id="cs_made_up", credits=50)
    await save(books, account)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    kinds = sorted(f.kind for f in report.findings)
    assert kinds == ["credited-twice", "purchase-without-checkout"]


async def test_a_session_paid_again_or_paid_less_than_it_asked_is_a_purchase_mismatch(
    isolated_db: IsolatedDatabase,
) -> None:
    """The service's role may append a payment the session would have refused: of another
    amount (a mismatch, which credits nothing), or a second one. Its CreditsPurchased then
    matched a paid session."""
    books = await build_history(isolated_db)
    forged = CheckoutSession.request(
        session_id="cs_one_cent",
        account_id="acct_alice",
        credits=10_000,
        amount=10_000,
        currency="usd",
        checkout_url="http://127.0.0.1/pay/cs_one_cent",
        expires_at=0,
    )
    forged.trigger_event(CheckoutPaid, payment_intent="pi_one_cent", amount_paid=1)
    account = await books.account("acct_alice")
    account.purchase("cs_one_cent", 10_000)
    paid_before: Any = await books.repository.get(
        CheckoutSession, checkout_stream_id("cs_0_b"), fresh=True
    )
    paid_before.trigger_event(CheckoutPaid, payment_intent="pi_0_b", amount_paid=300)
    await save(books, forged, account, paid_before)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)

    assert [(f.kind, f.account_id, f.detail) for f in report.findings] == [
        (
            "purchase-mismatch",
            "acct_alice",
            f"session {session_id} recorded paid with {paid} of the {amount} it asked, while "
            f"{status}: a session is paid once, of its amount (another amount is a mismatch, "
            "which credits nothing)",
        )
        for session_id, paid, amount, status in (
            ("cs_one_cent", 1, 10_000, "pending"),
            ("cs_0_b", 300, 300, "paid"),
        )
    ]
    await books.uow.committer.stop()


async def test_a_statement_past_what_its_view_can_hold_is_a_finding_not_a_crash(
    isolated_db: IsolatedDatabase,
) -> None:
    """Spends the projector cannot fold (a balance past a bigint), under a statement
    view's position moved past them by hand: the replay's line for them is a finding."""
    books = isolated_db.ledger()
    await open_account(books, "acct_huge", 100)
    await caught_up(isolated_db.store)
    account = await books.account("acct_huge")
    for _ in range(2):
        account.trigger_event(
            CreditsSpent, amount=2**63 - 1, from_allowance=2**63 - 1, from_topup=0, reason="x"
        )
    await save(books, account)
    await books.uow.committer.stop()
    last = await isolated_db.pool.fetchval("SELECT max(notification_id) FROM stored_events")
    await tamper(isolated_db.url, "UPDATE projection_positions SET position = $1", last)

    report = await verify(isolated_db.pool)

    [past] = [f for f in report.findings if "past a bigint" in f.detail]
    assert (past.kind, past.account_id, past.version) == ("statement-view", "acct_huge", 3)
    assert past.detail == (
        f"its statement line holds a number past a bigint ({-(2**63 - 1)} changed, "
        f"{100 - 2 * (2**63 - 1)} after), which the view at position {last} cannot hold"
    )
    assert {"negative-allowance", "overdrawn"} <= {f.kind for f in report.findings}


async def test_the_verify_command_reports_and_exits_by_its_findings(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)

    clean = await ledger(isolated_db.url, "audit", "verify")
    as_json = await ledger(isolated_db.url, "audit", "verify", "--json")
    await isolated_db.pool.execute(
        "UPDATE purchases SET status = 'expired' WHERE session_id = 'cs_0_a'"
    )
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET state = state || ' '::bytea
           WHERE originator_id = $1 AND originator_version = 1""",
        account_stream_id("acct_alice"),
    )
    dirty = await ledger(isolated_db.url, "audit", "verify")

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "OK: hash chains, balances, invariants, snapshots and views agree" in clean.stdout
    assert "events/s" in clean.stdout
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    assert json.loads(as_json.stdout)["findings"] == []
    assert dirty.returncode == 1
    assert "[hash-mismatch] account acct_alice, version 1" in dirty.stdout
    assert "[purchases-view]" in dirty.stdout
    assert "FAILED: 2 findings\n" in dirty.stdout


async def far_from_their_recorded_times(books: Ledger) -> None:
    """Events the service's role appends (``append()`` takes what it is sent, the event's own
    time too) stamped far from when the database records them: a spend of acct_alice's in
    2099, which has the next command on the account, from a host whose clock is right,
    decided in 2099 too (a stream's times never go back), and an account opened a day ago."""
    alice = await books.account("acct_alice")
    alice.spend(5, "work", at=datetime(2099, 1, 1, tzinfo=UTC))
    await save(books, alice)
    await books.execute(
        SpendCredits(account_id="acct_alice", amount=1, reason="work", idempotency_key="later")
    )
    earlier = set_command_time(datetime.now(UTC) - timedelta(days=1))
    try:
        carol = CreditAccount.open("acct_carol", 100, "2026-12")
    finally:
        reset_command_time(earlier)
    await save(books, carol)


async def test_an_event_whose_own_time_is_far_from_its_recorded_time_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """Its command was judged at its own time (expiries, the grants a spend may use, the burn
    order), which only the writer vouches for; honest writers stay within seconds of the
    database's clock (ledger/clock_guard.py)."""
    books = await build_history(isolated_db)
    alice_version = (await books.account("acct_alice")).version
    await far_from_their_recorded_times(books)
    await caught_up(isolated_db.store)

    report = await verify(isolated_db.pool)
    two_days = await verify(isolated_db.pool, max_time_skew=2 * 86_400)
    widened = await verify(isolated_db.pool, max_time_skew=math.inf)

    assert [(f.kind, f.account_id, f.version) for f in report.findings] == [
        ("time-far-from-record", "acct_alice", alice_version + 1),
        ("time-far-from-record", "acct_alice", alice_version + 2),
        ("time-far-from-record", "acct_carol", 1),
    ]
    ahead, later, behind = (f.detail for f in report.findings)
    assert ahead.startswith("CreditsSpent tells the time 2099-01-01T00:00:00+00:00, ")
    assert "days ahead of when the database recorded it" in ahead
    assert "more than the 60 s allowed (--max-time-skew)" in ahead
    assert "so were its stream's later commands until that time came" in ahead
    assert later.startswith("CreditsSpent tells the time 2099-01-01T00:00:00+00:00, ")
    assert behind.startswith("AccountOpened tells the time ")
    assert "hours behind when the database recorded it" in behind
    assert "later commands" not in behind
    assert [(f.account_id, f.version) for f in two_days.findings] == [
        ("acct_alice", alice_version + 1),
        ("acct_alice", alice_version + 2),
    ]
    assert widened.findings == []


async def test_the_verify_command_judges_event_times_within_max_time_skew(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await build_history(isolated_db)
    await far_from_their_recorded_times(books)
    await caught_up(isolated_db.store)

    judged = await ledger(isolated_db.url, "audit", "verify")
    wide = await ledger(isolated_db.url, "audit", "verify", "--max-time-skew", "2e9")
    unjudged = await ledger(isolated_db.url, "audit", "verify", "--max-time-skew", "inf")
    refused = await ledger(isolated_db.url, "audit", "verify", "--max-time-skew", "0")

    assert judged.returncode == 1, judged.stdout + judged.stderr
    assert judged.stdout.count("[time-far-from-record]") == 3
    assert "FAILED: 3 findings\n" in judged.stdout
    assert wide.returncode == 1  # 2099 is more than 2e9 s ahead of now
    assert wide.stdout.count("[time-far-from-record]") == 2
    assert unjudged.returncode == 0, unjudged.stdout + unjudged.stderr
    assert refused.returncode == 2
    assert "--max-time-skew" in refused.stderr


async def test_the_report_says_the_bound_it_judged_event_times_by(
    isolated_db: IsolatedDatabase,
) -> None:
    """A clean report under ``--max-time-skew inf`` judged no event's time: the report says
    so, in JSON (null: JSON has no infinity) and in words, beside the bound when it judged."""
    await build_history(isolated_db)

    default = await ledger(isolated_db.url, "audit", "verify")
    default_json = await ledger(isolated_db.url, "audit", "verify", "--json")
    wide_json = await ledger(isolated_db.url, "audit", "verify", "--json", "--max-time-skew", "90")
    unjudged = await ledger(isolated_db.url, "audit", "verify", "--max-time-skew", "inf")
    unjudged_json = await ledger(
        isolated_db.url, "audit", "verify", "--json", "--max-time-skew", "inf"
    )

    for run in (default, default_json, wide_json, unjudged, unjudged_json):
        assert run.returncode == 0, run.stdout + run.stderr
    assert (
        "event times: judged within 60 s of when the database recorded them (--max-time-skew)\n"
        in default.stdout
    )
    assert "event times: not judged (--max-time-skew inf)\n" in unjudged.stdout
    assert [
        json.loads(run.stdout)["max_time_skew_seconds"]
        for run in (default_json, wide_json, unjudged_json)
    ] == [60, 90, None]
    assert (await verify(isolated_db.pool, max_time_skew=math.inf)).max_time_skew_seconds is None


async def test_export_stops_with_one_line_where_a_history_is_damaged(
    isolated_db: IsolatedDatabase,
) -> None:
    """Past a missing or unreadable event every balance an export printed would be wrong
    (a missing one was passed over, an unreadable one was a traceback)."""
    await build_history(isolated_db)
    alice, bob = account_stream_id("acct_alice"), account_stream_id("acct_bob")
    await tamper(
        isolated_db.url,
        "DELETE FROM stored_events WHERE originator_id = $1 AND originator_version = 5",
        alice,
    )
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET topic = 'ledger.domain.events:Nothing'
           WHERE originator_id = $1 AND originator_version = 3""",
        bob,
    )

    gap = await ledger(isolated_db.url, "audit", "export", "acct_alice")
    unreadable = await ledger(isolated_db.url, "audit", "export", "acct_bob", "--format", "csv")

    assert gap.returncode == 1
    assert len(gap.stdout.splitlines()) == 4
    assert "version 6 follows version 4" in gap.stderr
    assert unreadable.returncode == 1
    assert len(unreadable.stdout.splitlines()) == 1 + 2  # the header and versions 1-2
    assert "version 3 cannot be read" in unreadable.stderr
    for run in (gap, unreadable):
        assert "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1


async def test_an_export_that_stops_half_way_leaves_the_file_as_it_was(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    """`-o FILE` was written as the history came: an export that stopped at a damaged event
    left the versions before it under the name asked for, over an earlier whole export."""
    await build_history(isolated_db)
    earlier, fresh = tmp_path / "bob.csv", tmp_path / "new.csv"
    whole = await ledger(
        isolated_db.url, "audit", "export", "acct_bob", "--format", "csv", "-o", str(earlier)
    )
    before = earlier.read_bytes()
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET topic = 'ledger.domain.events:Nothing'
           WHERE originator_id = $1 AND originator_version = 3""",
        account_stream_id("acct_bob"),
    )

    over = await ledger(
        isolated_db.url, "audit", "export", "acct_bob", "--format", "csv", "-o", str(earlier)
    )
    new = await ledger(isolated_db.url, "audit", "export", "acct_bob", "-o", str(fresh))

    assert whole.returncode == 0, whole.stderr
    assert len(before.splitlines()) > 1 + 2
    for stopped in (over, new):
        assert stopped.returncode == 1
        assert "version 3 cannot be read" in stopped.stderr
        assert "2 events exported before it" in stopped.stderr
    assert earlier.read_bytes() == before
    assert os.listdir(tmp_path) == ["bob.csv"]  # no new file, nothing left


async def test_export_writes_the_history_as_json_lines_and_csv(
    isolated_db: IsolatedDatabase,
) -> None:
    books = await build_history(isolated_db)
    await books.execute(
        GrantCredits(
            account_id="acct_bob",
            amount=250,
            priority=0,
            expires_at=None,
            reason="promo",
            idempotency_key="g1",
        )
    )
    await books.execute(
        SpendCredits(account_id="acct_bob", amount=1100, reason="work", idempotency_key="b-g")
    )

    jsonl = await ledger(isolated_db.url, "audit", "export", "acct_bob")
    as_csv = await ledger(isolated_db.url, "audit", "export", "acct_bob", "--format", "csv")
    missing = await ledger(isolated_db.url, "audit", "export", "acct_nobody")

    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    account = await books.account("acct_bob")
    assert [line["version"] for line in lines] == list(range(1, account.version + 1))
    assert lines[-1]["balance_after"] == account.balance
    assert len(rows) == len(lines)
    assert int(rows[-1]["balance_after"]) == account.balance
    assert json.loads(rows[0]["data"])["account_id"] == "acct_bob"
    # One format of time in both (the CSV wrote "+00:00" beside the JSON's "Z").
    assert [row["recorded_at"] for row in rows] == [line["recorded_at"] for line in lines]
    assert all(row["recorded_at"].endswith("Z") for row in rows)
    assert missing.returncode == 1
    # Every line adds up, grants too (their columns were missing: a money review).
    for before, line in itertools.pairwise(lines):
        for bucket in ("allowance", "topup", "granted"):
            assert line[f"{bucket}_after"] == before[f"{bucket}_after"] + line[f"{bucket}_change"]
    assert [line["granted_after"] for line in lines[-2:]] == [250, account.granted]
    assert int(rows[-1]["granted_after"]) == account.granted


async def test_a_purchase_row_moved_to_another_account_or_repriced_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE purchases SET credits = 10, amount = 10, currency = 'eur',
                  account_id = 'acct_bob'
           WHERE session_id = 'cs_0_b'""",
    )

    report = await verify(isolated_db.pool)

    details = sorted(f.detail for f in report.findings if f.kind == "purchases-view")
    assert [d.split(" (view at")[0] for d in details] == [
        "session cs_0_b is account acct_bob's in the view",
        "session cs_0_b: amount is 10 in the view, 300 replayed",
        "session cs_0_b: credits is 10 in the view, 300 replayed",
        "session cs_0_b: currency is eur in the view, usd replayed",
    ]


async def test_a_purchase_rows_dates_and_order_customers_see_are_compared(
    isolated_db: IsolatedDatabase,
) -> None:
    """``GET /v1/credits/purchases`` shows when a purchase was made and paid, newest first
    by position, and reconciliation picks pending ones by created_at: those columns could
    say anything (an audit review). updated_at too (the next review)."""
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE purchases SET created_at = '2020-01-01Z', paid_at = '2020-01-02Z',
                  updated_at = '2020-01-03Z', position = position + 1000
           WHERE session_id = 'cs_0_b'""",
    )

    report = await verify(isolated_db.pool)

    details = sorted(f.detail for f in report.findings if f.kind == "purchases-view")
    assert [d.split(" is ")[0] for d in details] == [
        "session cs_0_b: created_at",
        "session cs_0_b: paid_at",
        "session cs_0_b: position",
        "session cs_0_b: updated_at",
    ]


async def test_a_payment_intent_linked_to_another_session_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """The link decides where a refund that names only the intent is applied: a link
    changed by hand would take Alice's refund from Bob."""
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE claims SET response = convert_to('cs_1_a', 'UTF8')
           WHERE scope = 'payment-intent' AND key = 'pi_0_b'""",
    )

    report = await verify(isolated_db.pool)

    [link] = report.findings
    assert (link.kind, link.account_id) == ("payment-link", "acct_bob")
    assert link.detail.startswith(
        "payment intent pi_0_b is linked to session cs_1_a, which pi_1_a paid"
    )


async def test_protections_taken_away_are_reported_and_the_audit_puts_nothing_back(
    isolated_db: IsolatedDatabase,
) -> None:
    """A dropped or disabled trigger, or a grant to the service's role, let history change;
    and `audit verify` with an administrator's URL applied the grants again, revoking the
    evidence before it read anything (an audit review)."""
    await build_history(isolated_db)
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute("DROP TRIGGER stored_events_no_truncate ON stored_events")
        await admin.execute("ALTER TABLE snapshots DISABLE TRIGGER snapshots_no_update_or_delete")
        await admin.execute("GRANT UPDATE ON claims TO ledger_service")
        # The relay's role reads the store alone: given INSERT, it could write history.
        await admin.execute("GRANT INSERT ON stored_events TO ledger_relay")
        # Fires only in replica mode: in every ordinary session, as good as gone (a review).
        await admin.execute("ALTER TABLE claims ENABLE REPLICA TRIGGER claims_no_truncate")
    finally:
        await admin.close()

    # DATABASE_ADMIN_URL too: the pool set the database up a second time (a review).
    audited = await ledger(
        isolated_db.url,
        *("audit", "verify", "--jobs", "1"),
        env={"DATABASE_ADMIN_URL": isolated_db.url},
    )

    assert audited.returncode == 1
    found = [line for line in audited.stdout.splitlines() if "[store-protection]" in line]
    assert sorted(found) == [
        "[store-protection] the append-only trigger does not fire on claims.no_truncate",
        "[store-protection] the append-only trigger does not fire on snapshots.no_update_or_delete",
        "[store-protection] the append-only trigger is missing on stored_events.no_truncate",
        "[store-protection] the role ledger_relay may INSERT on stored_events",
        "[store-protection] the role ledger_service may UPDATE on claims",
    ]
    granted = await isolated_db.pool.fetchval(
        "SELECT has_table_privilege('ledger_service', 'claims', 'UPDATE')"
    )
    assert granted  # still there: the audit changed nothing


async def test_protections_weakened_but_in_place_are_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """The triggers there and enabled, but firing on no row that matters, or their function
    letting everything through; a write granted on some columns only: each let history change
    as a dropped trigger or a table grant does, and the audit said OK (an audit review)."""
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """CREATE OR REPLACE FUNCTION stored_events_are_append_only() RETURNS trigger
               LANGUAGE plpgsql AS $$ BEGIN RETURN coalesce(NEW, OLD); END; $$"""
        )
        await admin.execute(
            """DROP TRIGGER claims_no_update_or_delete ON claims;
               CREATE TRIGGER claims_no_update_or_delete BEFORE DELETE OR UPDATE ON claims
                   FOR EACH ROW WHEN (OLD.scope = 'none')
                   EXECUTE FUNCTION stored_events_are_append_only();
               DROP TRIGGER snapshots_no_update_or_delete ON snapshots;
               CREATE TRIGGER snapshots_no_update_or_delete
                   BEFORE DELETE OR UPDATE OF topic ON snapshots
                   FOR EACH ROW EXECUTE FUNCTION stored_events_are_append_only()"""
        )
        await admin.execute("GRANT INSERT (state) ON stored_events TO ledger_service")
    finally:
        await admin.close()

    report = await verify(isolated_db.pool)

    assert sorted(f.detail for f in report.findings if f.kind == "store-protection") == [
        "the append-only trigger fires only on some rows or columns on claims.no_update_or_delete",
        "the append-only trigger fires only on some rows or columns on "
        "snapshots.no_update_or_delete",
        "the function of the append-only triggers is not what the migrations made on "
        "stored_events_are_append_only()",
        "the role ledger_service may INSERT on stored_events",
    ]


async def test_a_service_role_that_may_act_as_the_owner_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """A member of ledger_owner may SET ROLE to it and disable the triggers, with or without
    inheriting its privileges (an audit review). Roles are the server's: granted in a
    transaction that is rolled back, so no other database ever sees it."""
    admin = await asyncpg.connect(isolated_db.url)
    granted = admin.transaction()
    await granted.start()
    try:
        await admin.execute("GRANT ledger_owner TO ledger_service")
        verifier = Verifier(admin)
        await verifier._check_protections()
    finally:
        await granted.rollback()
        await admin.close()

    assert sorted(f.detail for f in verifier.findings if "owner" in f.detail) == [
        f"the role ledger_service may act as its owner, ledger_owner on {table}"
        for table in ("claims", "snapshots", "stored_events")
    ]


async def test_a_relays_position_open_to_other_roles_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """Row security keeps the relay's position rows to its own functions (migration 0030):
    turned off, its policies changed or outnumbered, TRUNCATE granted or row security
    bypassed, the service or the projector could move the relay on past events it never
    published. Changed in a transaction that is rolled back, as above (ALTER ROLE is the
    server's)."""
    admin = await asyncpg.connect(isolated_db.url)
    assert [f for f in await _protections(admin) if "projection_positions" in f] == []
    changed = admin.transaction()
    await changed.start()
    try:
        await admin.execute(
            """ALTER TABLE projection_positions DISABLE ROW LEVEL SECURITY;
               DROP POLICY positions_read ON projection_positions;
               ALTER POLICY views_positions_written ON projection_positions USING (true);
               CREATE POLICY relay_moved ON projection_positions FOR UPDATE USING (true);
               GRANT TRUNCATE ON projection_positions TO ledger_projector;
               ALTER ROLE ledger_service BYPASSRLS"""
        )
        found = await _protections(admin)
    finally:
        await changed.rollback()
        await admin.close()

    assert found == [
        "row security, which keeps the relay's position to its own functions, is off on "
        "projection_positions",
        "the role ledger_projector may TRUNCATE on projection_positions",
        "the role ledger_service bypasses row security on projection_positions",
        "the row security policy positions_read is missing on projection_positions",
        "the row security policy relay_moved is not one the migrations made on "
        "projection_positions",
        "the row security policy views_positions_written is not what the migrations made on "
        "projection_positions",
    ]


async def _protections(admin: asyncpg.Connection) -> list[str]:
    verifier = Verifier(admin)
    await verifier._check_protections()
    return sorted(f.detail for f in verifier.findings if f.kind == "store-protection")


async def test_a_service_role_that_owns_the_database_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """A database's owner may drop it, history and all (a security review). Changed in a
    transaction that is rolled back, as above."""
    admin = await asyncpg.connect(isolated_db.url)
    changed = admin.transaction()
    await changed.start()
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'ALTER DATABASE "{database}" OWNER TO ledger_service')
        verifier = Verifier(admin)
        await verifier._check_protections()
    finally:
        await changed.rollback()
        await admin.close()

    assert [f.detail for f in verifier.findings if f.detail.endswith(database)] == [
        f"the role ledger_service may drop it as its owner, ledger_service on database {database}"
    ]


@pytest.mark.parametrize(
    "change",
    [
        "amount = -9000, description = 'Fee'",
        "description = 'Fee'",
        "allowance_change = allowance_change - 1, topup_change = topup_change + 1",
        "recorded_at = recorded_at + interval '1 microsecond'",
        "type = 'CreditsGranted'",
        "topup_after = topup_after + 5, balance_after = balance_after + 5",
        "type = type || left(description, 1), description = substr(description, 2)",
    ],
)
async def test_a_statement_line_changed_in_any_column_customers_see_is_reported(
    isolated_db: IsolatedDatabase, change: str
) -> None:
    """Only each account's line count and last balance were compared: a line in the
    middle could say anything (an audit review)."""
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        f"""UPDATE statement_lines SET {change}
            WHERE account_id = 'acct_alice'
              AND position = (SELECT min(position) FROM statement_lines
                              WHERE account_id = 'acct_alice' AND type = 'CreditsSpent')""",
    )

    report = await verify(isolated_db.pool)

    [changed] = report.findings
    assert (changed.kind, changed.account_id) == ("statement-view", "acct_alice")
    assert "lines are not the replay's" in changed.detail


_FIRST_SPEND = """(SELECT min(position) FROM statement_lines
                   WHERE account_id = 'acct_alice' AND type = 'CreditsSpent')"""
_COPY_OF_FIRST_SPEND = f"""
    INSERT INTO statement_lines
    SELECT {{account}}, position + 1000000, gen_random_uuid(), version, type, amount,
           allowance_change, topup_change, allowance_after, topup_after, balance_after,
           description, recorded_at, granted_change, granted_after
    FROM statement_lines WHERE account_id = 'acct_alice' AND position = {_FIRST_SPEND}"""


@pytest.mark.parametrize(
    ("tampering", "account", "found"),
    [
        (
            f"DELETE FROM statement_lines WHERE account_id = 'acct_alice'"
            f" AND position = {_FIRST_SPEND}",
            "acct_alice",
            "lines in the view",
        ),
        (_COPY_OF_FIRST_SPEND.format(account="account_id"), "acct_alice", "lines in the view"),
        (  # as many lines as the replay's, one of them twice and one gone
            _COPY_OF_FIRST_SPEND.format(account="account_id")
            + """; DELETE FROM statement_lines WHERE account_id = 'acct_alice'
                 AND position = (SELECT max(position) FROM statement_lines
                                 WHERE account_id = 'acct_alice' AND position < 1000000)""",
            "acct_alice",
            "lines are not the replay's",
        ),
        (_COPY_OF_FIRST_SPEND.format(account="'acct_nobody'"), "acct_nobody", "for no account"),
        ("DELETE FROM statement_lines WHERE account_id = 'acct_bob'", "acct_bob", "has no lines"),
    ],
    ids=["missing", "extra", "duplicated-in-place-of-another", "no-account", "all-gone"],
)
async def test_a_statement_line_missing_added_or_duplicated_is_reported(
    isolated_db: IsolatedDatabase, tampering: str, account: str, found: str
) -> None:
    """The view's lines are compared as a whole with the replay's, not only line by line:
    a line too many or too few is a finding, also when the count still matches."""
    await build_history(isolated_db)
    await tamper(isolated_db.url, tampering)

    report = await verify(isolated_db.pool)

    [changed] = report.findings
    assert (changed.kind, changed.account_id) == ("statement-view", account)
    assert found in changed.detail


async def test_a_balance_rows_next_allowance_and_stream_are_compared(
    isolated_db: IsolatedDatabase,
) -> None:
    """The allowance the next reset gives was not compared (an audit review)."""
    await build_history(isolated_db)
    await tamper(
        isolated_db.url,
        """UPDATE balances SET next_monthly_allowance = 1000000, stream_id = gen_random_uuid()
           WHERE account_id = 'acct_bob'""",
    )

    report = await verify(isolated_db.pool)

    assert {(f.kind, f.account_id) for f in report.findings} == {("balances-view", "acct_bob")}
    changed = sorted(f.detail.split(" is ")[0] for f in report.findings)
    assert changed == ["next_monthly_allowance", "stream_id"]


async def test_statement_lines_with_any_text_digest_alike_in_postgresql_and_the_replay(
    isolated_db: IsolatedDatabase,
) -> None:
    """Descriptions with '|', line feeds, accents, CJK and emoji: the same lines either side."""
    books = await build_history(isolated_db)
    for n, reason in enumerate(["é|ü\n-5|6", "払い戻し 🚀", "\r\n", "|", "a" * 500]):
        await books.execute(
            SpendCredits(
                account_id="acct_alice", amount=1, reason=reason, idempotency_key=f"odd-{n}"
            )
        )
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()

    report = await verify(isolated_db.pool)

    assert report.findings == []


async def test_a_statement_line_with_one_accented_letter_changed_is_reported(
    isolated_db: IsolatedDatabase,
) -> None:
    """The digest hashes the text's UTF-8 bytes (``textsend``): a letter changed for another
    of as many characters and bytes ('é' for 'è') is a finding, the unchanged lines none."""
    books = await build_history(isolated_db)
    await books.execute(
        SpendCredits(account_id="acct_alice", amount=1, reason="café 払い", idempotency_key="fr")
    )
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()
    assert (await verify(isolated_db.pool)).findings == []
    await tamper(
        isolated_db.url,
        """UPDATE statement_lines SET description = replace(description, 'é', 'è')
           WHERE account_id = 'acct_alice' AND description LIKE 'café%'""",
    )

    report = await verify(isolated_db.pool)

    [changed] = report.findings
    assert (changed.kind, changed.account_id) == ("statement-view", "acct_alice")
    assert "lines are not the replay's" in changed.detail


async def test_statement_digests_agree_on_a_database_url_naming_another_client_encoding(
    isolated_db: IsolatedDatabase, audit_jobs: int
) -> None:
    """A ``DATABASE_URL`` may name a session setting (asyncpg passes its query's parameters
    on), ``client_encoding=LATIN1`` too; the audit's sessions keep UTF-8 whatever it says
    (``SERVICE_SETTINGS``, and ``--jobs``' own connections): the digests' ``textsend`` gives
    the text in the client's encoding, and a LATIN1 'é' is not the replay's UTF-8 one (every
    such line was a finding)."""
    from api.database import SERVICE_SETTINGS
    from audit import verify as audit

    books = await build_history(isolated_db)
    await books.execute(
        SpendCredits(account_id="acct_alice", amount=1, reason="café", idempotency_key="latin")
    )
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()
    url = f"{isolated_db.url}{'&' if '?' in isolated_db.url else '?'}client_encoding=LATIN1"
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1, server_settings=SERVICE_SETTINGS)
    try:
        report = await audit.verify(
            pool, jobs=audit_jobs, database_url=url if audit_jobs > 1 else None
        )
    finally:
        await pool.close()

    assert report.findings == []

"""Reconciliation: a missed webhook's work is done by asking Stripe, exactly once.

The stand-in holds the webhook back (as an outage longer than Stripe's retries
would); ``ledger stripe reconcile`` (a process of its own, the real SDK against
the stand-in) or the service's periodic run applies what Stripe says; the held
webhook delivered afterwards changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from api.reconcile import (
    PeriodicReconciler,
    checkout_lookup,
    parse_duration,
    parse_since,
    reconcile_pending,
    reconcile_seconds_from_env,
)
from api.services import Services
from ledger.domain.ids import account_stream_id, checkout_stream_id
from stripe_standin import RunningStandin
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.e2e.test_checkout_flow import AS_SCRIPT, Purchase, pay, purchase
from tests.support.cli import ROOT, run_on_a_terminal
from tests.support.events import caught_up, stream_events
from tests.support.ledger import open_account


@pytest.fixture
def held(standin: RunningStandin) -> Iterator[None]:
    """Checkout events are recorded by the stand-in, not delivered, until released."""
    standin.hold_webhooks(
        [
            "checkout.session.completed",
            "checkout.session.expired",
            "checkout.session.async_payment_succeeded",
            "checkout.session.async_payment_failed",
        ]
    )
    yield
    standin.hold_webhooks([])


def held_about(standin: RunningStandin, session_id: str) -> list[str]:
    return [
        event.id
        for event in standin.held_events
        if json.loads(event.body)["data"]["object"]["id"] == session_id
    ]


def reconcile_env(standin: RunningStandin, database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "LEDGER_"))}
    env.update(
        DATABASE_URL=database_url,
        STRIPE_SECRET_KEY="sk_test_reconcile",
        STRIPE_API_BASE=standin.base_url,
        LEDGER_DATA_DIR=str(tmp_path / "data"),
    )
    return env


async def reconcile_cli(
    standin: RunningStandin, database_url: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = reconcile_env(standin, database_url, tmp_path)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "stripe", "reconcile", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def session_events(services: Services, session_id: str) -> list[str]:
    return [t for t, _ in await stream_events(services.store, checkout_stream_id(session_id))]


async def purchased_events(services: Services, account_id: str) -> list[str]:
    return [
        t
        for t, _ in await stream_events(services.store, account_stream_id(account_id))
        if t == "CreditsPurchased"
    ]


async def purchase_status(services: Services, customer: Customer, session_id: str) -> str:
    await caught_up(services.store)
    [row] = [
        p
        for p in await services.views.purchases(customer.account_id, limit=100)
        if p.session_id == session_id
    ]
    return row.status


async def test_a_paid_session_whose_webhook_was_dropped_is_credited_by_reconcile_once(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    services: Services,
    customer: Customer,
    database_url: str,
    tmp_path: Path,
    held: None,
) -> None:
    bought = await purchase(http, customer, 1500)
    await pay(http, bought)
    [completed] = held_about(standin, bought.session_id)
    assert await purchase_status(services, customer, bought.session_id) == "pending"
    before = await services.ledger.account(customer.account_id, fresh=True)

    first = await reconcile_cli(
        standin, database_url, tmp_path, "--older-than", "0", "--account", customer.account_id
    )
    again = await reconcile_cli(
        standin, database_url, tmp_path, "--older-than", "0", "--account", customer.account_id
    )
    credited = await services.ledger.account(customer.account_id, fresh=True)
    [attempt] = await standin.release_webhooks([completed])
    after_webhook = await services.ledger.account(customer.account_id, fresh=True)

    assert first.returncode == 0, first.stderr
    assert (
        f"{bought.session_id}  {customer.account_id}  1,500 credits  paid at Stripe: credited"
        in first.stdout
    )
    assert "checked 1 pending purchase: 1 credited" in first.stderr
    assert again.returncode == 0, again.stderr  # the view is behind: the store says paid
    assert "settled here already" in again.stdout
    assert credited.topup_balance == before.topup_balance + 1500
    assert attempt.status == 200  # the late webhook is accepted ...
    assert after_webhook.topup_balance == credited.topup_balance  # ... and changes nothing
    assert await purchased_events(services, customer.account_id) == ["CreditsPurchased"]
    assert await session_events(services, bought.session_id) == [
        "CheckoutRequested",
        "CheckoutPaid",
    ]
    assert await purchase_status(services, customer, bought.session_id) == "paid"


async def test_reconcile_of_an_account_that_does_not_exist_says_so_and_exits_2(
    standin: RunningStandin, services: Services, database_url: str, tmp_path: Path
) -> None:
    """A mistyped --account found no pending purchase and exited 0, "no pending purchases
    to check": a cron job's monitor read it as every purchase checked."""
    missing = await reconcile_cli(standin, database_url, tmp_path, "--account", "acct_nope")

    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.splitlines() == ["Error: account acct_nope does not exist"]
    assert missing.stdout == ""


async def test_reconcile_shows_its_progress_on_a_terminal_only(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    services: Services,
    customer: Customer,
    database_url: str,
    tmp_path: Path,
    held: None,
) -> None:
    """It asks Stripe about one purchase after another (a thousand take minutes) and said
    nothing until the last answer."""
    for credits in (1000, 2000):
        await pay(http, await purchase(http, customer, credits))
    await caught_up(services.store)  # the view lists what is pending
    args = ("--older-than", "0", "--account", customer.account_id)

    code, on_terminal = await asyncio.to_thread(
        run_on_a_terminal,
        database_url,
        "stripe",
        "reconcile",
        *args,
        env=reconcile_env(standin, database_url, tmp_path),
    )
    piped = await reconcile_cli(standin, database_url, tmp_path, *args)
    without_purchases = unique("acct_no_purchase")
    await open_account(services.ledger, without_purchases)
    _, nothing_to_do = await asyncio.to_thread(
        run_on_a_terminal,
        database_url,
        "stripe",
        "reconcile",
        "--account",
        without_purchases,
        env=reconcile_env(standin, database_url, tmp_path),
    )

    assert code == 0, on_terminal
    last_bar = [line for line in on_terminal.split("\r") if "%|" in line][-1]
    assert "100%|" in last_bar, on_terminal
    assert "| 2/2 " in last_bar, last_bar
    assert "checked 2 pending purchases: 2 credited" in on_terminal
    assert piped.returncode == 0, piped.stderr
    assert "%|" not in piped.stderr  # no bar when nobody watches
    assert piped.stderr == "checked 2 pending purchases: 2 settled\n"
    assert nothing_to_do == "no pending purchases to check\r\n"  # no bar of 0 purchases


async def test_an_expired_session_whose_webhook_was_dropped_is_closed(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    services: Services,
    customer: Customer,
    held: None,
) -> None:
    bought = await purchase(http, customer, 400)
    expired = await http.post(f"{bought.checkout_url}/expire", headers=AS_SCRIPT)
    assert expired.status_code == 200, expired.text
    [expiry] = held_about(standin, bought.session_id)
    assert await purchase_status(services, customer, bought.session_id) == "pending"

    results = await reconcile_pending(
        services,
        checkout_lookup(services),
        since=None,
        older_than=timedelta(0),
        account_id=customer.account_id,
    )
    [attempt] = await standin.release_webhooks([expiry])

    assert [(r.session_id, r.found, r.outcome) for r in results] == [
        (bought.session_id, "expired", "expired")
    ]
    assert attempt.status == 200
    assert await session_events(services, bought.session_id) == [
        "CheckoutRequested",
        "CheckoutExpired",
    ]
    assert await purchase_status(services, customer, bought.session_id) == "expired"


async def test_a_failed_delayed_payment_is_closed_and_an_open_or_young_one_left_alone(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    services: Services,
    customer: Customer,
    held: None,
) -> None:
    failed = await purchase(http, customer, 200)
    await pay(http, failed, mode="async", outcome="fail")
    still_open = await purchase(http, customer, 300)
    await caught_up(services.store)
    lookup = checkout_lookup(services)

    young = await reconcile_pending(
        services, lookup, since=None, account_id=customer.account_id
    )  # the default: younger than 15 minutes is left to its webhooks
    results = await reconcile_pending(
        services, lookup, since=None, older_than=timedelta(0), account_id=customer.account_id
    )
    await standin.release_webhooks(held_about(standin, failed.session_id))

    assert young == []
    assert {r.session_id: (r.found, r.outcome) for r in results} == {
        failed.session_id: ("failed", "failed"),
        still_open.session_id: ("open", "unchanged"),
    }
    assert await session_events(services, failed.session_id) == [
        "CheckoutRequested",
        "CheckoutFailed",
    ]
    assert await session_events(services, still_open.session_id) == ["CheckoutRequested"]


async def test_a_busy_session_is_left_for_the_next_run_and_the_others_reconciled(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    services: Services,
    customer: Customer,
    held: None,
) -> None:
    """A session whose turn did not come (ConcurrencyConflict) ended the whole run: the
    sessions after it waited for the next, and the run logged a traceback."""
    busy, other = await purchase(http, customer, 200), await purchase(http, customer, 300)
    for bought in (busy, other):
        await pay(http, bought)
    await caught_up(services.store)
    locks = services.ledger.uow.locks
    locks.wait, before = 0.05, locks.wait  # the turn given up soon

    try:
        async with locks.hold(f"checkout/{busy.session_id}"):  # a delivery in flight, for long
            results = await reconcile_pending(
                services,
                checkout_lookup(services),
                since=None,
                older_than=timedelta(0),
                account_id=customer.account_id,
            )
    finally:
        locks.wait = before
    await standin.release_webhooks(held_about(standin, busy.session_id))
    await standin.release_webhooks(held_about(standin, other.session_id))

    assert {r.session_id: (r.found, r.outcome) for r in results} == {
        busy.session_id: ("paid", "error"),
        other.session_id: ("paid", "credited"),
    }


async def test_a_session_stripe_does_not_know_is_left_pending(
    services: Services, customer: Customer, standin: RunningStandin
) -> None:
    found = await checkout_lookup(services).look_up_checkout("cs_test_nobody_made_this")

    assert (found.state, found.meaning) == ("unknown", None)


async def test_the_service_reconciles_by_itself_when_asked_to(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    services: Services,
    customer: Customer,
    held: None,
) -> None:
    bought: Purchase = await purchase(http, customer, 700)
    await pay(http, bought)
    await caught_up(services.store)
    before = await services.ledger.account(customer.account_id, fresh=True)

    reconciler = PeriodicReconciler(
        services,
        checkout_lookup(services),
        0.1,
        older_than=timedelta(0),
        account_id=customer.account_id,
    )
    reconciler.start()
    try:
        deadline = time.monotonic() + 30
        while (await services.ledger.session(bought.session_id, fresh=True)).status != "paid":  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "not reconciled within 30 s"
            await asyncio.sleep(0.05)
    finally:
        await reconciler.stop()
    await standin.release_webhooks(held_about(standin, bought.session_id))

    after = await services.ledger.account(customer.account_id, fresh=True)
    assert after.topup_balance == before.topup_balance + 700
    assert await purchased_events(services, customer.account_id) == ["CreditsPurchased"]


def test_reconcile_is_off_unless_an_interval_is_given() -> None:
    assert reconcile_seconds_from_env({}) is None
    assert reconcile_seconds_from_env({"LEDGER_RECONCILE_SECONDS": "0"}) is None
    assert reconcile_seconds_from_env({"LEDGER_RECONCILE_SECONDS": "300"}) == 300
    # nan stopped the reconciler after its first run; 1e-7 ran it back to back (a review).
    for odd in ("often", "nan", "inf", "1e-7", "-1", "1e300"):
        with pytest.raises(ValueError, match="LEDGER_RECONCILE_SECONDS must be a number"):
            reconcile_seconds_from_env({"LEDGER_RECONCILE_SECONDS": odd})


def test_since_takes_durations_dates_and_times() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("0") == timedelta(0)
    assert parse_since("7d", now) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T09:00:00Z", now) == datetime(2026, 11, 1, 9, tzinfo=UTC)
    for bad in ("yesterday", "7 days", "12x", ""):
        with pytest.raises(ValueError, match="is neither a duration"):
            parse_since(bad, now)
    # Each was an OverflowError or a database error, as a traceback (a CLI review); then
    # --since said "neither a duration" where --older-than said "longer than" (a review).
    for far in ("99999999999d", "1000000d", "10000000w", "999999999d"):
        with pytest.raises(ValueError, match="is longer than 36,600 days"):
            parse_duration(far)
        with pytest.raises(ValueError, match=f"^'{far}' is longer than 36,600 days$"):
            parse_since(far, now)
    for edge in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(ValueError, match="between the years 1 and 9999 in UTC"):
            parse_since(edge, now)


def test_since_takes_the_first_day_of_year_one() -> None:
    """ "Everything": it only bounds a query (as PostgreSQL's -infinity, which compares
    right). It was refused as "not between the years 1 and 9999 in UTC" once that check
    left out the two instants asyncpg cannot read back as written."""
    from datetime import UTC, datetime

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_since("0001-01-01", now) == datetime(1, 1, 1, tzinfo=UTC)


async def test_reconcile_exits_2_when_stripe_could_not_be_asked_and_1_for_a_purchase_to_look_at(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    services: Services,
    customer: Customer,
    database_url: str,
    tmp_path: Path,
    held: None,
) -> None:
    """Both exited 1 (and a purchase paid another amount, 0): a cron job's monitor could not
    tell "look at this purchase" from "the run did not do its work", as `audit verify` can."""
    args = ("--older-than", "0", "--account", customer.account_id)
    asked_for = await purchase(http, customer, 1000)
    await pay(http, asked_for)
    await caught_up(services.store)
    standin.state.fail_status, standin.state.fail_count = 503, 100  # past the SDK's retries

    try:
        unanswered = await reconcile_cli(standin, database_url, tmp_path, *args)
    finally:
        standin.state.fail_count = 0
    other_amount = await purchase(http, customer, 2000)
    await pay(http, other_amount)
    await caught_up(services.store)
    # Stripe took another amount than was asked (its session says so) for this one.
    standin.state.sessions[other_amount.session_id].data["amount_total"] += 1
    mismatched = await reconcile_cli(standin, database_url, tmp_path, *args)
    again = await reconcile_cli(standin, database_url, tmp_path, *args)

    assert unanswered.returncode == 2, unanswered.stderr
    assert f"{asked_for.session_id}  {customer.account_id}  1,000 credits  error: " in (
        unanswered.stdout
    )
    assert unanswered.stderr.splitlines()[-1] == (
        "Error: 1 purchase could not be checked (its line says why); the next run tries again"
    )
    assert mismatched.returncode == 1, mismatched.stderr
    assert "2,000 credits  paid at Stripe: recorded as paid another amount" in mismatched.stdout
    assert "1 credited" in mismatched.stderr
    assert "1 mismatched" in mismatched.stderr
    assert again.returncode == 0, again.stderr  # said once: it is not pending any more

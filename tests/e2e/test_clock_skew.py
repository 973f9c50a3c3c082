"""A host whose clock is too far from the database's records nothing (ledger/clock_guard.py).

Its events would tell its time, and a stream's times never go back: a host a day ahead
would have every later command on the accounts it touched decided a day ahead, from any
host. The service's clock is injected (``create_app(clock=...)``), set apart from the
database's; each test measures again through the guard's own check (the background
loop's step) rather than waiting for the loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import msgspec
import pytest

from api.access.tokens import Scope
from api.services import Services, open_services
from api.settings import Settings
from ledger.clock_guard import ClockGuard, ClockSkewed
from ledger.commands import OpenAccount, SpendCredits
from ledger.domain.ids import account_stream_id
from stripe_standin import RunningStandin
from tests.conftest import unique
from tests.e2e.conftest import served_api
from tests.support.events import stream_events
from tests.support.ledger import open_account


class SetClock:
    """The wall clock moved by ``offset`` (a test sets it)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def gauge(page: str, name: str) -> float:
    (line,) = [line for line in page.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def test_a_host_ahead_of_the_database_refuses_commands_and_is_not_ready(
    database_url: str, standin: RunningStandin, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SetClock(timedelta(days=1))
    with caplog.at_level(logging.INFO, logger="ledger.clock_guard"):
        async with served_api(database_url, standin, clock=clock) as app:
            services: Services = app.state.services
            guard = services.ledger.clock_guard
            async with httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http:
                # Measured at start-up: out of the load balancer before its first request.
                started = await http.get("/readyz")

                clock.offset = timedelta(0)
                await guard.check(services.pool)
                ready = await http.get("/readyz")
                account_id = unique("acct")
                await open_account(services.ledger, account_id, 100)
                issued = await services.tokens.issue(Scope.LEDGER_WRITE, name="tests")
                headers = {"Authorization": f"Bearer {issued.secret}"}
                spend = f"/v1/accounts/{account_id}/spend"
                before = await stream_events(services.store, account_stream_id(account_id))

                clock.offset = timedelta(days=1)
                await guard.check(services.pool)
                refused = await http.post(
                    spend, json={"amount": 5}, headers={**headers, "Idempotency-Key": "ahead"}
                )
                not_ready = await http.get("/readyz")
                page = (await http.get("/metrics")).text
                balance = await http.get(f"/v1/accounts/{account_id}/credits", headers=headers)
                after_refusal = await stream_events(services.store, account_stream_id(account_id))
                # Measured again while still ahead: said once, not at every measurement.
                await guard.check(services.pool)

                clock.offset = timedelta(seconds=1)  # within the tolerance (5 s)
                await guard.check(services.pool)
                accepted = await http.post(
                    spend, json={"amount": 5}, headers={**headers, "Idempotency-Key": "ahead"}
                )
                back = await http.get("/readyz")
                page_back = (await http.get("/metrics")).text

    assert started.status_code == 503
    assert ready.status_code == 200

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    message = refused.json()["message"]
    assert "clock is 86400.0 seconds ahead of the database's" in message
    assert "Nothing was recorded" in message
    assert after_refusal == before
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "unavailable", "reason": "clock"}
    assert gauge(page, "ledger_clock_skewed") == 1
    assert gauge(page, "ledger_clock_offset_seconds") > 86000
    assert balance.status_code == 200  # reads go on

    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["balance"] == 95
    assert back.status_code == 200
    assert gauge(page_back, "ledger_clock_skewed") == 0
    assert 0 < gauge(page_back, "ledger_clock_offset_seconds") < 60

    lines = [r.getMessage() for r in caplog.records if r.name == "ledger.clock_guard"]
    began = [line for line in lines if "commands are refused" in line]
    ended = [line for line in lines if "commands are taken again" in line]
    assert len(began) == 2  # at start-up, and when it ran ahead again
    assert len(ended) == 2  # when it came back after start-up, and at the end


async def test_a_host_behind_the_database_refuses_commands_too(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    clock = SetClock(-timedelta(minutes=10))
    # As the CLI's commands open their services: measured once, before any command.
    async with open_services(settings, payments=False, clock=clock) as services:
        account_id = unique("acct")
        with pytest.raises(ClockSkewed) as refused:
            await services.ledger.execute(OpenAccount(account_id=account_id, monthly_allowance=1))
        recorded = await stream_events(services.store, account_stream_id(account_id))

    assert "10.0 minutes behind the database's" in str(refused.value)
    assert recorded == []


async def test_the_tolerance_is_the_setting(database_url: str) -> None:
    clock = SetClock(-timedelta(minutes=1))
    wide = Settings(database_url=database_url, max_clock_skew_seconds=120)
    async with open_services(wide, payments=False, clock=clock) as services:
        opened = await open_account(services.ledger, unique("acct"), 1)
    async with open_services(
        Settings(database_url=database_url), payments=False, clock=clock
    ) as services:
        with pytest.raises(ClockSkewed) as refused:
            await open_account(services.ledger, unique("acct"), 1)

    assert opened.monthly_allowance == 1
    assert "more than the 5 s allowed" in str(refused.value)


def spend(account_id: str, key: str) -> SpendCredits:
    return SpendCredits(account_id=account_id, amount=5, reason="", idempotency_key=key)


async def test_a_clock_that_steps_between_two_measurements_is_measured_again_first(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """NTP steps the clock 3 min ahead after the guard measured it, before its next
    measurement: the commands that read it measure again (once) and are refused, rather
    than stamping their events 3 min ahead. Stepped back, the next command measures again
    and is taken, without waiting for the next measurement either."""
    clock = SetClock()
    # As the CLI's commands open their services: measured once, then never in the background.
    async with open_services(Settings(database_url=database_url), payments=False, clock=clock) as (
        services
    ):
        accounts = [unique("acct") for _ in range(5)]
        for account_id in accounts:
            await open_account(services.ledger, account_id, 100)
        before = await stream_events(services.store, account_stream_id(accounts[0]))

        clock.offset = timedelta(minutes=3)
        with caplog.at_level(logging.INFO, logger="ledger.clock_guard"):
            refused = await asyncio.gather(
                *(services.ledger.execute(spend(a, "stepped")) for a in accounts),
                return_exceptions=True,
            )
            after = await stream_events(services.store, account_stream_id(accounts[0]))
            clock.offset = timedelta(0)
            spent = await services.ledger.execute(spend(accounts[0], "stepped"))
        (*_, last) = await services.store.load(account_stream_id(accounts[0]))

    assert all(isinstance(error, ClockSkewed) for error in refused), refused
    # Not 2 min: measured, 120 s is "120.0 s" or "2.0 minutes" by the round trip's error.
    assert "3.0 minutes ahead of the database's" in str(refused[0])
    assert after == before
    assert spent.balance == 95
    stamped = datetime.fromisoformat(msgspec.json.decode(last.state)["timestamp"])
    assert abs((stamped - last.recorded_at).total_seconds()) < 5
    stepped = [r.getMessage() for r in caplog.records if "stepped" in r.getMessage()]
    assert len(stepped) == 2  # one measurement for the five commands, one for the step back
    assert stepped[0].startswith("this host's clock stepped +180.")


async def test_a_step_the_database_cannot_measure_is_judged_by_the_monotonic_clock(
    database_url: str,
) -> None:
    clock = SetClock()
    guard = ClockGuard(clock, tolerance=5)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    await guard.measure(pool)
    await pool.close()  # the database no longer answers

    clock.offset = timedelta(seconds=-30)
    stepped = guard.stepped()
    await guard.check_stepped(pool)

    assert stepped
    assert guard.skewed
    assert guard.offset is not None
    assert -31 < guard.offset < -29
    assert not guard.stepped()  # judged: not measured again at every command

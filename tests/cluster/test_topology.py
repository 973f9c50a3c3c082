"""The topology under faults, through nginx: replicas killed, the projector replaced,
the standby stopped or cut off, the primary restarted. Nothing acknowledged is lost.

Each test prints requests sent, answers by status, events stored and events lost.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter

import asyncpg
import httpx
import pytest

from api.read_side import MAX_STANDBY_LAG, READ_WAIT, STANDBY_RETRY
from ledger.store.commit import Writes, write_batch
from ledger.store.event_store import read_after
from projections.queries import Views
from tests.cluster.conftest import (
    SpendLoad,
    Topology,
    assert_nothing_lost,
    open_accounts,
    wait_for_answers,
)
from tests.faults.conftest import wait_for_projections
from tests.integration.test_event_store import event
from tests.integration.test_projections import assert_views_match_the_events
from tests.support.events import tail_position

pytestmark = pytest.mark.slow


async def read_credits(
    client: httpx.AsyncClient, cluster: Topology, account_id: str, position: int | None = None
) -> httpx.Response:
    headers = dict(cluster.headers)
    if position is not None:
        headers["Ledger-Min-Position"] = str(position)
    return await client.get(f"/v1/accounts/{account_id}/credits", headers=headers)


async def until_reads_come_from(
    client: httpx.AsyncClient, cluster: Topology, account_id: str, source: str, seconds: float = 30
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = await read_credits(client, cluster, account_id)
        if answer.status_code == 200 and answer.headers.get("ledger-read-from") == source:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"reads did not come from the {source} within {seconds} s")


async def test_a_spend_is_in_the_balance_read_at_once_through_nginx_with_its_position(
    cluster: Topology,
) -> None:
    [account_id] = await open_accounts(cluster, 1, allowance=10_000)
    balance = 10_000
    sources: Counter[str] = Counter()
    stale_without_position = 0
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        for n in range(40):
            spent = await client.post(
                f"/v1/accounts/{account_id}/spend",
                json={"amount": 7, "reason": f"read-your-writes {n}"},
                headers={**cluster.headers, "Idempotency-Key": f"ryw-{account_id}-{n}"},
            )
            assert spent.status_code == 200, spent.text
            balance -= 7
            assert spent.json()["balance"] == balance
            position = int(spent.headers["ledger-position"])
            if n % 2:  # without the position a read may be a moment behind (counted, not failed)
                unordered = await read_credits(client, cluster, account_id)
                stale_without_position += unordered.json()["balance"] != balance
            read = await read_credits(client, cluster, account_id, position)
            assert read.status_code == 200
            assert read.json()["balance"] == balance, (n, read.headers)
            sources[read.headers["ledger-read-from"]] += 1
        # A replayed key answers at a position too: the one the store had reached.
        again = await client.post(
            f"/v1/accounts/{account_id}/spend",
            json={"amount": 7, "reason": "read-your-writes 0"},
            headers={**cluster.headers, "Idempotency-Key": f"ryw-{account_id}-0"},
        )
        assert again.status_code == 200
        assert int(again.headers["ledger-position"]) >= position
        # The auditors' feed from the standby has the spend's event at that position.
        feed = await client.get(
            f"/v1/accounts/{account_id}/events",
            headers={**cluster.audit_headers, "Ledger-Min-Position": str(position)},
        )
        assert feed.status_code == 200
        assert position in [e["position"] for e in feed.json()["data"]]
    print(
        f"\nread-your-writes through nginx: 40 spends, each read at once with its position: "
        f"all 40 balances current, answered from {dict(sources)}; without the position "
        f"{stale_without_position} of 20 reads were behind"
    )
    assert sources["standby"] > 0


async def test_reads_fall_back_to_the_primary_when_the_standby_stops(cluster: Topology) -> None:
    account_ids = await open_accounts(cluster, 4)
    load = SpendLoad(cluster, account_ids, clients=4, pause=0.02, read_every=1)
    running = asyncio.create_task(load.run())
    try:
        await wait_for_answers(load, 40, after=0)
        await asyncio.to_thread(cluster.standby.stop)
        stopped_at = time.monotonic()
        await wait_for_answers(load, 80, after=stopped_at)
        during = Counter(load.read_from)
        await asyncio.to_thread(cluster.standby.start)
        async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
            await until_reads_come_from(client, cluster, account_ids[0], "standby")
    finally:
        load.stop.set()
        await running
    assert set(load.read_statuses) == {200}, load.read_statuses
    assert set(load.statuses) == {200}, load.statuses
    assert during["primary"] > 0
    await assert_nothing_lost(cluster, load, "standby stopped and started")


async def test_reads_fall_back_when_the_standby_is_cut_off_the_network(cluster: Topology) -> None:
    if cluster.network is None:
        pytest.skip(f"no network namespaces here, so no cable to pull: {cluster.mode}")
    account_ids = await open_accounts(cluster, 4)
    load = SpendLoad(cluster, account_ids, clients=4, pause=0.02, read_every=1)
    standby_host = cluster.network.hosts["standby"]
    running = asyncio.create_task(load.run())
    try:
        await wait_for_answers(load, 40, after=0)
        cluster.network.cut(standby_host)
        cut_at = time.monotonic()
        # Longer than a read waits for the standby, and than it is then left alone.
        await asyncio.sleep(STANDBY_RETRY * 2)
        await wait_for_answers(load, 80, after=cut_at)
        cluster.network.restore(standby_host)
        async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
            await until_reads_come_from(client, cluster, account_ids[0], "standby")
    finally:
        cluster.network.restore(standby_host)
        load.stop.set()
        await running
    assert set(load.read_statuses) == {200}, load.read_statuses
    assert set(load.statuses) == {200}, load.statuses
    assert load.read_from["primary"] > 0
    await assert_nothing_lost(cluster, load, "standby cut off the network and back")


async def test_nginx_routes_around_a_killed_replica_and_retried_keys_apply_once(
    cluster: Topology,
) -> None:
    account_ids = await open_accounts(cluster, 8)
    load = SpendLoad(cluster, account_ids, clients=8, pause=0.005)
    victim = cluster.apis[1]
    running = asyncio.create_task(load.run())
    try:
        await wait_for_answers(load, 150, after=0)
        victim.send(signal.SIGKILL)
        killed_at = time.monotonic()
        assert await victim.wait() == -signal.SIGKILL
        await wait_for_answers(load, 300, after=killed_at)
        answered_without_it = load.answered_since(killed_at)
        await victim.start()
        await wait_for_answers(load, 100, after=time.monotonic())
    finally:
        load.stop.set()
        await running
    assert answered_without_it >= 300
    # Only the requests in flight on the killed replica fail (nginx does not resend a
    # POST it had passed on): answered 502, or cut off (None) when the replica had sent
    # the answer's head but not its body. Their clients retry with the same key.
    assert set(load.statuses) <= {200, 502, None}, load.statuses
    assert load.statuses[502] + load.statuses[None] <= load.clients, load.statuses
    await assert_nothing_lost(cluster, load, "one API replica SIGKILLed under load")


async def test_a_killed_projector_is_replaced_and_the_views_equal_the_replay(
    cluster: Topology,
) -> None:
    account_ids = await open_accounts(cluster, 6)
    load = SpendLoad(cluster, account_ids, clients=4, pause=0.01)
    running = asyncio.create_task(load.run())
    try:
        await wait_for_answers(load, 100, after=0)
        cluster.projector.send(signal.SIGKILL)
        assert await cluster.projector.wait() == -signal.SIGKILL
        killed_at = time.monotonic()
        await wait_for_answers(load, 150, after=killed_at)  # the views fall behind meanwhile
        await cluster.projector.start()  # another projector takes over
        await wait_for_answers(load, 100, after=time.monotonic())
    finally:
        load.stop.set()
        await running
    head = await wait_for_projections(cluster.store)
    await assert_views_match_the_events(cluster.store, account_ids)
    # The standby's views are the primary's, once it has replayed that far.
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        for account_id in account_ids:
            read = await read_credits(client, cluster, account_id, head)
            projected = await Views(cluster.store.pool).balance(account_id)
            assert projected is not None
            assert read.json()["balance"] == projected.balance
    assert set(load.statuses) == {200}
    await assert_nothing_lost(cluster, load, "projector SIGKILLed and another started")


async def test_commands_answer_503_while_the_primary_restarts_then_recover(
    cluster: Topology,
) -> None:
    account_ids = await open_accounts(cluster, 6)
    load = SpendLoad(cluster, account_ids, clients=6, pause=0.01)
    running = asyncio.create_task(load.run())
    try:
        await wait_for_answers(load, 100, after=0)
        await asyncio.to_thread(cluster.primary.stop)
        down_at = time.monotonic()
        # Requests sent in the first half second may have reached the primary before it
        # stopped: the answers that count are those sent after it (below), and at least 60
        # of them, however fast the service answers while the primary is down.
        await wait_for_answers(load, 60, after=down_at + 0.5)
        up_at = time.monotonic()
        await asyncio.to_thread(cluster.primary.start)
        assert cluster.pool is not None
        await cluster.pool.expire_connections()
        deadline = time.monotonic() + 60
        while not [s for t, s in load.events if t > up_at and s == 200]:
            assert time.monotonic() < deadline, "no spend succeeded within 60 s of the restart"
            await asyncio.sleep(0.05)
        await wait_for_answers(load, 100, after=time.monotonic())
    finally:
        load.stop.set()
        await running
    while_down = [status for sent, status in load.events if down_at + 0.5 <= sent <= up_at]
    assert while_down, "no request was sent while the primary was down"
    assert set(while_down) <= {503, 502}, Counter(while_down)
    assert 503 in while_down
    assert load.retry_after_missing == 0
    assert set(load.statuses) <= {200, 502, 503}, load.statuses
    await assert_nothing_lost(cluster, load, "primary stopped and started under load")


async def test_a_reader_of_the_standby_never_passes_an_append_still_open_on_the_primary(
    cluster: Topology,
) -> None:
    """A standby's snapshot lists no running transaction: the watermark of the primary's
    sessions let a later append through there while an earlier one was still open, and a
    reader of the feed from the standby would never have seen the earlier (a diff review)."""
    assert cluster.pool is not None
    start = await tail_position(cluster.store)
    standby = await asyncpg.connect(cluster.standby.url(user="ledger_service"))
    slow = await cluster.pool.acquire()
    transaction = slow.transaction()
    await transaction.start()
    try:
        [outcome] = await write_batch(slow, [Writes(events=[event(uuid.uuid4(), 1)])])
        [early] = outcome.result()
        [late] = await cluster.store.append([event(uuid.uuid4(), 1)])
        for _ in range(3000):  # until the standby has replayed the later append
            if await standby.fetchval(
                "SELECT count(*) FROM stored_events WHERE notification_id = $1", late
            ):
                break
            await asyncio.sleep(0.01)
        seen_while_open = [e.notification_id for e in await read_after(standby, start, 100)]
        await transaction.commit()
    finally:
        await cluster.pool.release(slow)
        await standby.close()

    assert early < late
    assert late not in seen_while_open
    assert early not in seen_while_open


async def test_a_rolling_restart_behind_nginx_answers_every_request(cluster: Topology) -> None:
    """Each replica stopped with SIGTERM (as a supervisor does), started again and answering
    before the next one stops: nothing should fail. With nginx's default fail_timeout (10 s)
    each refused connection took its replica out for 10 s, so by the third replica all
    three were out and nginx answered 502 "no live upstreams" to every request (a review:
    973 of 2,175 spends)."""
    account_ids = await open_accounts(cluster, 8)
    load = SpendLoad(cluster, account_ids, clients=8, pause=0.002, read_every=2)
    running = asyncio.create_task(load.run())
    try:
        await wait_for_answers(load, 100, after=0)
        for api in cluster.apis:
            api.send(signal.SIGTERM)
            assert await api.wait() == 0
            await api.start()
            await wait_for_answers(load, 100, after=time.monotonic())
    finally:
        load.stop.set()
        await running
    await assert_nothing_lost(cluster, load, "every replica restarted in turn under load")
    assert set(load.statuses) == {200}, load.statuses
    assert set(load.read_statuses) == {200}, load.read_statuses


async def test_reads_leave_a_standby_whose_replay_stands_still(cluster: Topology) -> None:
    """A standby answers while its replay stands still (paused here; in production, cut from
    a primary that no longer keeps the WAL it needs): reads without a position showed its
    old balance for as long as it did, and every read with one waited its full second
    before going to the primary (a review: 8 of 8 reads over 8 s)."""
    [account_id] = await open_accounts(cluster, 1, allowance=10_000)
    standby = await asyncpg.connect(cluster.standby.url())
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        first = await client.post(
            f"/v1/accounts/{account_id}/spend",
            json={"amount": 1, "reason": "before the pause"},
            headers={**cluster.headers, "Idempotency-Key": f"paused-{account_id}-0"},
        )
        position = int(first.headers["ledger-position"])
        assert (await read_credits(client, cluster, account_id, position)).json()[
            "balance"
        ] == 9_999
        await until_reads_come_from(client, cluster, account_id, "standby")
        await standby.execute("SELECT pg_wal_replay_pause()")
        try:
            spent = await client.post(
                f"/v1/accounts/{account_id}/spend",
                json={"amount": 7, "reason": "while paused"},
                headers={**cluster.headers, "Idempotency-Key": f"paused-{account_id}-1"},
            )
            assert spent.json()["balance"] == 9_992
            paused_at = time.monotonic()
            current = 0  # in a row: through round robin, every replica's reads
            while current < 2 * len(cluster.apis):
                assert time.monotonic() - paused_at < MAX_STANDBY_LAG + 5, "still the old one"
                read = await read_credits(client, cluster, account_id)
                current = current + 1 if read.json()["balance"] == 9_992 else 0
                await asyncio.sleep(0.1)
            # Every replica leaves it alone now; a read with its position answers at once.
            for _ in range(6):
                started = time.monotonic()
                read = await read_credits(
                    client, cluster, account_id, int(spent.headers["ledger-position"])
                )
                assert read.json()["balance"] == 9_992
                assert read.headers["ledger-read-from"] == "primary"
                assert time.monotonic() - started < READ_WAIT / 2
                unordered = await read_credits(client, cluster, account_id)
                assert unordered.json()["balance"] == 9_992
        finally:
            await standby.execute("SELECT pg_wal_replay_resume()")
            await standby.close()
        await until_reads_come_from(client, cluster, account_id, "standby")

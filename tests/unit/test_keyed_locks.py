"""Commands on one key take turns, each waiting a bounded time for its own."""

from __future__ import annotations

import asyncio

import pytest

from ledger.keyed_locks import KeyedLocks, TurnNotCome


async def test_a_turn_not_come_in_time_gives_up_and_leaves_no_lock_behind() -> None:
    locks = KeyedLocks(wait=0.05)
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with locks.hold("acct"):
            holding.set()
            await release.wait()
            order.append("first")

    task = asyncio.create_task(first())
    await holding.wait()
    with pytest.raises(TurnNotCome):
        async with locks.hold("acct"):
            order.append("never")
    release.set()
    await task
    async with locks.hold("acct"):  # free again, taken at once
        order.append("after")
    assert order == ["first", "after"]
    assert not locks._locks  # every key's entry dropped once its last user left


async def test_waiters_within_the_time_take_their_turns_in_order() -> None:
    locks = KeyedLocks(wait=5)
    order: list[int] = []

    async def command(n: int) -> None:
        async with locks.hold("acct"):
            await asyncio.sleep(0.001)
            order.append(n)

    await asyncio.gather(*(command(n) for n in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert not locks._locks


async def test_a_command_alone_on_its_key_makes_no_lock() -> None:
    locks = KeyedLocks(wait=5)
    async with locks.hold("acct"):
        assert locks._locks["acct"][0] is None  # made only once a second one comes
    assert not locks._locks


async def test_a_turn_passes_on_after_a_waiter_gave_up_on_a_key_held_without_a_lock() -> None:
    locks = KeyedLocks(wait=0.05)
    order: list[str] = []
    release = asyncio.Event()
    holding = asyncio.Event()

    async def first() -> None:
        async with locks.hold("acct"):
            holding.set()
            await release.wait()
            order.append("first")

    async def patient() -> None:
        locks.wait = 5
        async with locks.hold("acct"):
            order.append("patient")

    task = asyncio.create_task(first())
    await holding.wait()
    with pytest.raises(TurnNotCome):  # makes the key's lock, taken for the first
        async with locks.hold("acct"):
            order.append("never")
    waiting = asyncio.create_task(patient())
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(task, waiting)
    assert order == ["first", "patient"]
    assert not locks._locks


async def _steps(n: int = 3) -> None:
    """Let every task that is ready run ``n`` times."""
    for _ in range(n):
        await asyncio.sleep(0)


class _Inside:
    """Who holds each key now: more than one at once fails the test."""

    def __init__(self, locks: KeyedLocks) -> None:
        self.locks = locks
        self.order: list[str] = []
        self.holding: set[str] = set()

    async def command(
        self, name: str, release: asyncio.Event, key: str = "acct", wait: float | None = None
    ) -> None:
        held = self.locks.hold(key)
        if wait is not None:
            held._wait = wait
        async with held:
            assert key not in self.holding, f"{name} holds {key} beside another"
            self.holding.add(key)
            try:
                await release.wait()
                self.order.append(name)
            finally:
                self.holding.discard(key)


async def test_a_waiter_woken_then_cancelled_passes_its_turn_to_the_next() -> None:
    locks = KeyedLocks(wait=5)
    inside = _Inside(locks)
    go = asyncio.Event()
    first = asyncio.create_task(inside.command("first", go))
    await _steps()
    woken = asyncio.create_task(inside.command("woken", go))
    await _steps()
    third = asyncio.create_task(inside.command("third", go))
    await _steps()
    assert locks._locks["acct"][1] == 3
    go.set()
    await asyncio.sleep(0)  # the first leaves: its turn handed to ``woken``, not yet run
    assert first.done()
    assert not woken.done()
    woken.cancel()  # as its timeout would, after the lock was handed to it
    await asyncio.gather(first, third)
    with pytest.raises(asyncio.CancelledError):
        await woken
    assert inside.order == ["first", "third"]
    assert not locks._locks


async def test_a_waiter_woken_then_cancelled_alone_leaves_the_key_free() -> None:
    locks = KeyedLocks(wait=5)
    inside = _Inside(locks)
    go = asyncio.Event()
    first = asyncio.create_task(inside.command("first", go))
    await _steps()
    woken = asyncio.create_task(inside.command("woken", go))
    await _steps()
    go.set()
    await asyncio.sleep(0)  # the first leaves: its turn handed to ``woken``, not yet run
    assert first.done()
    assert not woken.done()
    woken.cancel()
    with pytest.raises(asyncio.CancelledError):
        await woken
    assert not locks._locks
    async with locks.hold("acct"):  # taken at once, without a lock
        assert locks._locks["acct"][0] is None


async def test_a_waiter_cancelled_in_the_middle_of_the_queue_keeps_the_order() -> None:
    locks = KeyedLocks(wait=5)
    inside = _Inside(locks)
    gates = [asyncio.Event() for _ in range(4)]
    tasks = []
    for n, gate in enumerate(gates):
        tasks.append(asyncio.create_task(inside.command(str(n), gate)))
        await _steps()
    tasks[1].cancel()  # waits behind 0, the one that made the lock
    tasks[2].cancel()
    await _steps()
    assert locks._locks["acct"][1] == 2
    gates[3].set()  # 3 is ready to go once its turn comes
    gates[0].set()
    await asyncio.gather(tasks[0], tasks[3])
    assert inside.order == ["0", "3"]
    assert not locks._locks


async def test_the_holder_leaving_as_a_waiter_times_out_hands_the_turn_on() -> None:
    locks = KeyedLocks(wait=5)
    inside = _Inside(locks)
    go = asyncio.Event()
    first = asyncio.create_task(inside.command("first", go))
    await _steps()
    # It gives up at the next turn of the loop, as the first leaves.
    hasty = asyncio.create_task(inside.command("hasty", go, wait=0))
    go.set()  # the first wakes in the same turn as the hasty one's timer is set
    patient = asyncio.create_task(inside.command("patient", go))
    results = await asyncio.gather(first, hasty, patient, return_exceptions=True)
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], TurnNotCome)  # the turn was handed to it as it gave up
    assert inside.order == ["first", "patient"]
    assert not locks._locks


async def test_many_commands_with_some_giving_up_each_hold_the_key_alone() -> None:
    locks = KeyedLocks(wait=5)
    inside = _Inside(locks)
    go = asyncio.Event()
    tasks = [asyncio.create_task(inside.command(str(n), go)) for n in range(8)]
    await _steps()
    for n in (1, 4, 7):
        tasks[n].cancel()
    go.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert inside.order == ["0", "2", "3", "5", "6"]
    assert not locks._locks

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

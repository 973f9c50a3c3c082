"""One asyncio lock per key, dropped when nobody holds or waits for it."""

from __future__ import annotations

import asyncio
from types import TracebackType


class TurnNotCome(TimeoutError):
    """The key's lock was not free within the time a command may wait for its turn."""


class KeyedLocks:
    """Commands on one aggregate take turns inside this process.

    Correctness does not rest on this: optimistic concurrency in the store still
    decides between processes. It only spares same-process writers from losing
    races to each other and retrying, which costs O(n^2) under contention.

    A command waits at most ``wait`` seconds for its turn (``TurnNotCome`` then):
    turns are taken one at a time, so without a bound the n-th of n commands on one
    key waited for the n - 1 before it, each as long as its own database waits (a
    lock held elsewhere: 5 s apiece), long after its client had given up.
    """

    def __init__(self, wait: float) -> None:
        self._locks: dict[str, list[asyncio.Lock | int | None]] = {}
        self.wait = wait

    def hold(self, key: str) -> _Held:
        """``async with locks.hold(key):`` holds the lock for ``key`` for the block."""
        return _Held(self._locks, key, self.wait)


class _Held:
    """The lock of one key, counted so that it is dropped when its last user leaves.

    A class rather than @asynccontextmanager: this runs for every command. A key's
    ``asyncio.Lock`` is made only once a second user comes while the first holds the key,
    taken at once on the first's behalf, and released by whoever holds the key when it
    leaves: the usual command, alone on its key, makes, takes and releases none (a spend
    4.4-5.6k instructions less of ~436k, callgrind, 64 at once over 1,000 accounts).
    """

    __slots__ = ("_key", "_locks", "_wait")

    def __init__(
        self, locks: dict[str, list[asyncio.Lock | int | None]], key: str, wait: float
    ) -> None:
        self._locks = locks
        self._key = key
        self._wait = wait

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            self._locks[self._key] = [None, 1]  # no one else holds it or waits: at once
            return
        entry[1] += 1  # type: ignore[operator]
        lock = entry[0]
        if lock is None:  # the one holding it took it without a lock: held now for it
            lock = entry[0] = asyncio.Lock()
            await lock.acquire()  # free: at once, no wait
        try:
            async with asyncio.timeout(self._wait):
                await lock.acquire()  # type: ignore[union-attr]
        except TimeoutError:
            self._leave()
            raise TurnNotCome(
                f"waited {self._wait:g} s for the commands before it on the same key"
            ) from None
        except BaseException:
            self._leave()
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entry = self._locks[self._key]
        if entry[0] is not None:  # others came meanwhile: the next one's turn
            entry[0].release()  # type: ignore[union-attr]
        self._leave()

    def _leave(self) -> None:
        entry = self._locks[self._key]
        entry[1] -= 1  # type: ignore[operator]
        if entry[1] == 0:
            del self._locks[self._key]

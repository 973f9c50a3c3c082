"""One asyncio lock per key, dropped when nobody holds or waits for it."""

from __future__ import annotations

import asyncio
from types import TracebackType


class KeyedLocks:
    """Commands on one aggregate take turns inside this process.

    Correctness does not rest on this: optimistic concurrency in the store still
    decides between processes. It only spares same-process writers from losing
    races to each other and retrying, which costs O(n^2) under contention.
    """

    def __init__(self) -> None:
        self._locks: dict[str, list[asyncio.Lock | int]] = {}

    def hold(self, key: str) -> _Held:
        """``async with locks.hold(key):`` holds the lock for ``key`` for the block."""
        return _Held(self._locks, key)


class _Held:
    """The lock of one key, counted so that it is dropped when its last user leaves.

    A class rather than @asynccontextmanager: this runs for every command.
    """

    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: dict[str, list[asyncio.Lock | int]], key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = [asyncio.Lock(), 0]
        entry[1] += 1  # type: ignore[operator]
        self._lock: asyncio.Lock = entry[0]  # type: ignore[assignment]
        try:
            await self._lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        entry = self._locks[self._key]
        entry[1] -= 1  # type: ignore[operator]
        if entry[1] == 0:
            del self._locks[self._key]

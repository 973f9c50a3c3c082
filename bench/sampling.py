"""What is sampled while spends run: the views' positions (projection lag) and memory.

A poller reads ``projection_positions`` every 5 ms with the server's
``clock_timestamp()``; each spend's lag is from its ``recorded_at`` (taken just before
its 200) to the first poll where both ``balances`` and ``statement`` have passed its
position: an upper bound by at most one poll. The service's RSS (``ledger serve`` and
its children) is read every 0.25 s.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from bench.service import Server
from ledger.domain.events import CreditsSpent, topics_of

SPEND_TOPICS = topics_of(CreditsSpent)
"""Every topic a spend is stored under (the typed events' and the one before them)."""
LAG_POLL_SECONDS = 0.005


@dataclass
class Sampler:
    """Polls the views' positions (with the server's clock) and the service's memory."""

    pool: asyncpg.Pool
    server: Server | None
    """The service whose memory is sampled (None: only the positions)."""
    times: list[datetime] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    rss_peak: int = 0
    rss_samples: list[int] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    by_view: dict[str, list[int]] = field(default_factory=lambda: {"balances": [], "statement": []})

    def mark(self) -> None:
        """Remember the latest poll (a load starts or stops)."""
        self.marks.append(len(self.positions) - 1)

    def advance_rates(self, view: str) -> list[float]:
        """Events/s ``view`` advanced between each pair of marks (while a load ran)."""
        positions = self.by_view[view]
        rates = []
        for start, end in zip(self.marks[::2], self.marks[1::2], strict=False):
            seconds = (self.times[end] - self.times[start]).total_seconds()
            if seconds > 0:
                rates.append((positions[end] - positions[start]) / seconds)
        return rates

    async def _positions(self) -> None:
        async with self.pool.acquire() as connection:
            while True:
                row: Any = await connection.fetchrow(
                    """SELECT clock_timestamp(),
                              max(position) FILTER (WHERE name = 'balances'),
                              max(position) FILTER (WHERE name = 'statement')
                       FROM projection_positions"""
                )
                balances, statement = int(row[1] or 0), int(row[2] or 0)
                self.times.append(row[0])
                self.positions.append(min(balances, statement))
                self.by_view["balances"].append(balances)
                self.by_view["statement"].append(statement)
                await asyncio.sleep(LAG_POLL_SECONDS)

    async def _memory(self) -> None:
        while self.server is not None:
            rss = await asyncio.to_thread(self.server.rss_bytes)
            self.rss_samples.append(rss)
            self.rss_peak = max(self.rss_peak, rss)
            await asyncio.sleep(0.25)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        tasks = [asyncio.create_task(self._positions()), asyncio.create_task(self._memory())]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def until_caught_up(self, head: int, limit: float = 300.0) -> float:
        """Wait until both views have applied everything up to ``head``; return the wait."""
        started = time.perf_counter()
        while not self.positions or self.positions[-1] < head:
            if time.perf_counter() - started > limit:
                raise RuntimeError(f"the projector did not reach position {head} in {limit} s")
            await asyncio.sleep(0.02)
        return time.perf_counter() - started

    def lags(self, events: list[tuple[int, datetime]], view: str | None = None) -> list[float]:
        """Seconds from each event's recorded_at to the first poll that saw it in both views
        (or in ``view``). Positions only grow, so the polls are sorted by position."""
        positions = self.positions if view is None else self.by_view[view]
        found = []
        for position, recorded_at in events:
            index = bisect.bisect_left(positions, position)
            if index < len(positions):
                found.append((self.times[index] - recorded_at).total_seconds())
        return found


async def head(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM stored_events"))


async def view_positions(pool: asyncpg.Pool) -> int:
    """How far both views have got (a view without a position row yet is at 0)."""
    value = await pool.fetchval(
        """SELECT least(coalesce(max(position) FILTER (WHERE name = 'balances'), 0),
                        coalesce(max(position) FILTER (WHERE name = 'statement'), 0))
           FROM projection_positions"""
    )
    return int(value or 0)


async def wait_for_projector(pool: asyncpg.Pool, limit: float = 600.0) -> float:
    """Wait until both views have applied everything stored now; return the wait."""
    target = await head(pool)
    started = time.perf_counter()
    while await view_positions(pool) < target:
        if time.perf_counter() - started > limit:
            raise RuntimeError("the projector is not catching up")
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


async def spends_between(pool: asyncpg.Pool, after: int, until: int) -> list[tuple[int, datetime]]:
    return await recorded_between(pool, after, until, SPEND_TOPICS)


async def recorded_between(
    pool: asyncpg.Pool, after: int, until: int, topics: Sequence[str]
) -> list[tuple[int, datetime]]:
    """The position and time of each event of ``topics`` after ``after``, up to ``until``."""
    rows = await pool.fetch(
        """SELECT notification_id, recorded_at FROM stored_events
           WHERE notification_id > $1 AND notification_id <= $2 AND topic = ANY($3::text[])""",
        after,
        until,
        list(topics),
    )
    return [(row[0], row[1]) for row in rows]


def percentile(values: list[float], percent: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]

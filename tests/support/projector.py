"""A projector beside a test's API, as ``ledger serve`` runs one beside its workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ledger.store.event_store import EventStore
from projections.runner import Projector


@asynccontextmanager
async def projector_running(store: EventStore, database_url: str) -> AsyncIterator[None]:
    """The views follow the store until the block ends (the projector then stops cleanly)."""
    stop = asyncio.Event()
    running = asyncio.create_task(Projector(store, database_url).run(stop))
    try:
        yield
    finally:
        stop.set()
        await running

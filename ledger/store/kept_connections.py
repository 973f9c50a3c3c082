"""What the tasks that keep a pool connection between uses share: the group committer's
writers (ledger/store/commit.py) and the commands' loads (ledger/store/shared_reads.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg


def usable(connection: Any) -> bool:
    """Whether a kept connection may take the next query: open, and not handed back to
    its pool by asyncpg itself, which does so when it reads that the server ended the
    connection (``Connection._cleanup``: the proxy left raises ``InterfaceError`` on every
    call, ``is_closed()`` included, and the pool's release of it does nothing). Nothing
    was sent on such a connection: the next query goes on another."""
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:
        return False


def resolve(future: asyncio.Future[bool], value: bool) -> None:
    """End an idle wait with ``value`` (its timer's call), unless something ended it."""
    if not future.done():
        future.set_result(value)

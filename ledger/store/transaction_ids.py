"""Events whose transaction ids this PostgreSQL has not reached: a store restored from a dump
(``pg_dump`` / ``pg_restore``, or logical replication) into a server whose transaction
counter is behind the one that wrote them.

Readers in commit order pass an event only once its ``transaction_id`` is older than every
transaction still running (``VISIBLE`` in ``event_store.py``). On such a server every restored
event looks not yet ended, so the feeds, the account histories, the relay and the projector
pass over them; and each append made there takes an id below theirs at a later position, so
a reader's cursor moves past the restored events for good. Nothing may rewrite the events'
ids (history is append-only), so the server's counter is moved instead: its epoch, the high
32 bits of an ``xid8``, which ``pg_resetwal -e`` sets on a stopped server and which nothing
else in PostgreSQL keeps (docs/backup-and-restore.md).
"""

from __future__ import annotations

import shlex

from ledger.store.event_store import Connection

_LAST_AND_NEXT = """
    SELECT (SELECT transaction_id::text::numeric FROM stored_events
            ORDER BY notification_id DESC LIMIT 1) AS last,
           pg_snapshot_xmax(pg_current_snapshot())::text::numeric AS next,
           (SELECT setting FROM pg_settings WHERE name = 'data_directory') AS data_directory"""
"""The last event's transaction id (appends hand ids out in position order, so in a store
just restored it is the highest), the id this server hands out next, and where its data is
(``pg_settings`` shows it only to a role that may read it)."""


class TransactionIdsAhead(Exception):
    """The store's events carry transaction ids this server has not handed out yet; the
    message says in one line what to run."""


async def refuse_transaction_ids_ahead(connection: Connection) -> None:
    """Raise TransactionIdsAhead when the store's last event was written by a transaction id
    this server has not reached; a store with no events, or none yet, passes."""
    if not await connection.fetchval("SELECT to_regclass('public.stored_events') IS NOT NULL"):
        return
    row = await connection.fetchrow(_LAST_AND_NEXT)
    assert row is not None  # one row: the select's
    if row["last"] is None or row["last"] < row["next"]:
        return
    last, following = int(row["last"]), int(row["next"])
    data_directory = shlex.quote(row["data_directory"]) if row["data_directory"] else "DATADIR"
    raise TransactionIdsAhead(
        f"the events' transaction ids run to {last}, ahead of this PostgreSQL's (next "
        f"{following}): the database was restored into a server whose transaction counter is "
        "behind the original's, and readers in commit order would pass over its events. Stop "
        f"the server, run `pg_resetwal -e {(last >> 32) + 1} -D {data_directory}` as its "
        "operating-system user, start it and run this again (docs/backup-and-restore.md)"
    )

"""The streams replayed in parts, one a worker process, each in the audit's snapshot, and
the parts merged into one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import re
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import msgspec

from audit.checkpoint_replay import CheckpointReplay
from audit.replay_state import HIDDEN_SHOWN, GivenBack, Part, StoredSnapshot
from audit.stream_replay import StreamReplay
from audit.time_skew import MAX_TIME_SKEW_SECONDS
from ledger import event_loop
from ledger.child_processes import end_with_parent
from ledger.heap import BATCHES_YOUNG, settle_after_start_up
from ledger.store.event_store import (
    CHAINED_COLUMNS,
    WHOLE_ROW,
    Connection,
    events_of_part,
    stream_part,
)
from projections.events import times_as_microseconds

CURSOR_PREFETCH = 5000

# Readers in commit order pass an event only once its transaction_id is older than every
# transaction still running (VISIBLE in ledger/store/event_store.py), and the hash chain
# does not cover that column: an event this snapshot sees was committed, so an id it does
# not see as ended is one the event was never written by, and the feeds, the account
# histories and the projector pass over the event (all but the first few, and how many).
# Read with each event by the replay (a column that is NULL but for such an event), not by a
# query of its own: that was one more read of the whole table. The snapshot is taken once
# (an InitPlan), not made again for each row.
_HIDDEN_BY = """CASE WHEN pg_visible_in_snapshot(transaction_id, (SELECT pg_current_snapshot()))
    THEN NULL ELSE transaction_id::text END"""
_AUDITED_COLUMNS = f"{CHAINED_COLUMNS}, {_HIDDEN_BY}"
"""The columns of an ``AuditedEvent`` (read as ``EVENT_COLUMNS`` are)."""


def merge_parts(parts: Sequence[Part]) -> Part:
    """One Part from the parts of disjoint sets of streams, as one replay of all would make it."""
    merged, *others = parts
    for part in others:
        _add_part(merged, part)
    for credits in merged.credited.values():
        credits.sort(key=lambda credit: credit[2])  # by position, as one replay meets them
    merged.hidden = sorted(merged.hidden, key=attrgetter("position"))[:HIDDEN_SHOWN]
    return merged


def _add_part(into: Part, part: Part) -> None:
    into.events += part.events
    into.streams += part.streams
    into.accounts += part.accounts
    into.snapshots += part.snapshots
    into.findings.extend(part.findings)
    for session_id, credits in part.credited.items():
        into.credited.setdefault(session_id, []).extend(credits)
    for session_id, given in part.taken_back.items():
        known = into.taken_back.get(session_id)
        into.taken_back[session_id] = given if known is None else _given_by_both(known, given)
    into.sessions.extend(part.sessions)
    into.intents.extend(part.intents)
    for view, rows in part.figures.items():
        into.figures.setdefault(view, {}).update(rows)
    into.purchase_rows.update(part.purchase_rows)
    _keep_latest(into.hold_status, part.hold_status)
    _keep_latest(into.grant_rows, part.grant_rows)
    into.stream_accounts.update(part.stream_accounts)
    into.claimed.update(part.claimed)
    into.unreplayed.extend(part.unreplayed)
    into.open_holds.extend(part.open_holds)
    into.settled_holds.update(part.settled_holds)
    into.voids |= part.voids
    for replayed, more in zip(into.checkpoints, part.checkpoints, strict=True):
        replayed.merge(more)
    into.hidden.extend(part.hidden)
    into.hidden_count += part.hidden_count
    into.last_hidden = max(into.last_hidden, part.last_hidden)


def _given_by_both(a: GivenBack, b: GivenBack) -> GivenBack:
    """What accounts in two parts took back of one session: the first account is the seller's."""
    first, second = sorted((a, b), key=lambda given: given.first_position)
    return GivenBack(
        account_id=first.account_id,
        credits=a.credits + b.credits,
        position=max(a.position, b.position),
        other_accounts=(first.other_accounts | second.other_accounts | {second.account_id})
        - {first.account_id},
        first_position=first.first_position,
        moved=[x + y for x, y in zip(a.moved, b.moved, strict=True)],
    )


_Row = TypeVar("_Row", bound=tuple[Any, ...])


def _keep_latest(into: dict[str, _Row], rows: dict[str, _Row]) -> None:
    """Merge rows whose last item is a position: a later one wins, as it would in one replay."""
    for key, row in rows.items():
        known = into.get(key)
        if known is None or row[-1] > known[-1]:
            into[key] = row


def _part_filter(part: tuple[int, int] | None) -> str:
    """The WHERE clause choosing part ``index`` of ``count`` by a hash of the stream id."""
    if part is None:
        return ""
    index, count = part
    return f"WHERE {stream_part(index, count)}"


async def _read_snapshots(
    connection: Connection, where: str
) -> tuple[dict[UUID, dict[int, StoredSnapshot]], int]:
    """Every snapshot, by stream and version, to compare with the replay as it passes."""
    rows = await connection.fetch(
        f"""SELECT originator_id, originator_version, topic, state, event_recorded_at
            FROM snapshots {where}"""
    )
    snapshots: dict[UUID, dict[int, StoredSnapshot]] = {}
    for row in rows:
        snapshot = StoredSnapshot(*row)
        snapshots.setdefault(snapshot.originator_id, {})[snapshot.originator_version] = snapshot
    return snapshots, len(rows)


async def replay_part(
    connection: Connection,
    positions: dict[str, int],
    checkpoints: Sequence[CheckpointReplay],
    on_progress: Callable[[int], None],
    part: tuple[int, int] | None = None,
    max_time_skew: float = MAX_TIME_SKEW_SECONDS,
) -> Part:
    """Replay the streams of ``part`` (index, count), or all of them, in position order;
    an event whose own time is more than ``max_time_skew`` seconds from its recorded time is
    reported (``StreamReplay.max_time_skew``)."""
    where = _part_filter(part)
    snapshots, snapshot_count = await _read_snapshots(connection, where)
    replay = StreamReplay(positions, snapshots, checkpoints, max_time_skew)
    count = 0
    # Each event's time read as the microseconds PostgreSQL keeps, by asyncpg's codec: a row
    # is then the event's fields, made an event with no call of ours in between.
    async with times_as_microseconds(connection):
        cursor = await connection.cursor(
            events_of_part(*part, columns=_AUDITED_COLUMNS)
            if part is not None
            else f"SELECT {_AUDITED_COLUMNS} FROM stored_events ORDER BY notification_id"
        )
        next_rows = asyncio.ensure_future(cursor.fetch(CURSOR_PREFETCH))
        try:
            while rows := await next_rows:
                # Ask for the next batch before replaying this one: the server reads and
                # sends it while this process is busy replaying.
                next_rows = asyncio.ensure_future(cursor.fetch(CURSOR_PREFETCH))
                await asyncio.sleep(0)
                for row in rows:
                    replay.replay(row[WHOLE_ROW])
                count += len(rows)
                on_progress(len(rows))
        finally:
            # Cancelled (a Ctrl-C) while the next batch was on its way: that fetch would hold
            # the connection, and the transaction's ROLLBACK fail "another operation is in
            # progress", with a traceback where the command says "Aborted!".
            await _stopped(next_rows)
    return replay.result(count, snapshot_count)


async def _stopped(fetch: asyncio.Future[Any]) -> None:
    """Cancel ``fetch`` if it is still running and wait until it has ended."""
    if not fetch.done():
        fetch.cancel()
        await asyncio.wait([fetch])
        if not fetch.cancelled():
            fetch.exception()  # retrieved, or asyncio logs it: what ended the replay is raised


class PartJob(msgspec.Struct, frozen=True):
    """What a worker process is sent: where to read, which snapshot, which part."""

    database_url: str
    snapshot: str
    index: int
    count: int
    positions: dict[str, int]
    checkpoints: list[CheckpointReplay]
    max_time_skew: float = MAX_TIME_SKEW_SECONDS


_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?")
_progress: multiprocessing.Queue[int] | None = None
"""A worker's way to report how many events it replayed (set as it starts)."""


def start_worker(progress: multiprocessing.Queue[int]) -> None:
    """Set up a worker process of the audit: it ends with its parent and reports progress."""
    global _progress
    end_with_parent()
    _progress = progress
    settle_after_start_up(young=BATCHES_YOUNG)


def _report_progress(events: int) -> None:
    if _progress is not None:
        _progress.put(events)


_PICKLED = ("hold_status", "grant_rows", "checkpoints")
"""The fields of a ``Part`` a worker sends as they are (pickled): a hold's and a grant's row
is a tuple of any values (UUIDs, times), which msgpack would bring back as others (a UUID as
text), and a checkpoint's replay is no Struct."""
_PART_DECODER = msgspec.msgpack.Decoder(Part)


class SentPart(msgspec.Struct, frozen=True):
    """A worker's ``Part`` as it is sent back: all but ``_PICKLED`` in msgpack, which
    ``received`` makes a ``Part`` of again. Pickling the whole Part (3.3 MB for 500,000
    events of 5,000 accounts) cost the worker 0.09-0.15 s of CPU at its end, where the audit
    waits for it, msgpack 0.01-0.02 s; the parent's load 0.07-0.13 s, now 0.06-0.08 s."""

    packed: bytes
    """Empty when the whole Part is pickled: a figure msgpack cannot hold (an int past
    64 bits, which a balance past a bigint makes)."""
    pickled: Part


def sent(part: Part) -> SentPart:
    """``part`` as a worker sends it back (``SentPart``)."""
    pickled = Part(**{field: getattr(part, field) for field in _PICKLED})
    rest = msgspec.structs.replace(part, **{field: getattr(Part(), field) for field in _PICKLED})
    try:
        return SentPart(msgspec.msgpack.encode(rest), pickled)
    except OverflowError:
        return SentPart(b"", part)


def received(part: SentPart) -> Part:
    """The ``Part`` a worker sent (``sent``)."""
    if not part.packed:
        return part.pickled
    return msgspec.structs.replace(
        _PART_DECODER.decode(part.packed),
        **{field: getattr(part.pickled, field) for field in _PICKLED},
    )


def replay_in_worker(job: PartJob) -> SentPart:
    """Replay one part, in a worker process (``_replay_in_snapshot``)."""
    return sent(event_loop.run(_replay_in_snapshot(job)))


async def _replay_in_snapshot(job: PartJob) -> Part:
    """Replay one part in the parent's snapshot, on a connection of this process."""
    if not _SNAPSHOT_ID.fullmatch(job.snapshot):
        raise ValueError(f"not a snapshot id: {job.snapshot!r}")
    connection = await asyncpg.connect(
        job.database_url, server_settings={"application_name": "ledger audit verify"}
    )
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            await connection.execute(f"SET TRANSACTION SNAPSHOT '{job.snapshot}'")
            part = await replay_part(
                connection,
                job.positions,
                job.checkpoints,
                _report_progress,
                (job.index, job.count),
                job.max_time_skew,
            )
    finally:
        await connection.close()
    part.checkpoints = [replayed.without_heads() for replayed in part.checkpoints]
    return part


def outcome_seen(future: asyncio.Future[Any]) -> None:
    """Take an abandoned future's failure, which asyncio would log: what interrupted
    the wait for it is what is raised."""
    if not future.cancelled():
        future.exception()


def drain_progress(progress: multiprocessing.Queue[int], on_progress: Callable[[int], None]) -> int:
    """Pass on the counts the workers reported so far; how many events they came to."""
    total = 0
    while True:
        try:
            total += progress.get_nowait()
        except queue.Empty:
            break
    if total:
        on_progress(total)
    return total

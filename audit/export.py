"""``ledger audit export``: one account's history as JSON Lines or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec

from ledger.domain.ids import account_stream_id
from ledger.store.event_store import EventStore
from ledger.store.mapper import MsgspecMapper
from ledger.times import in_utc
from projections.balance_changes import Buckets, apply_change, change_of

CSV_COLUMNS = [
    "position",
    "version",
    "type",
    "recorded_at",
    "allowance_change",
    "topup_change",
    "granted_change",
    "allowance_after",
    "topup_after",
    "granted_after",
    "balance_after",
    "description",
    "hash",
    "data",
]


class ExportedEvent(msgspec.Struct, frozen=True):
    """One line of the export: the event as stored, and its effect on the balance."""

    position: int
    version: int
    type: str
    recorded_at: datetime
    hash: str
    data: dict[str, Any]
    allowance_change: int
    topup_change: int
    granted_change: int
    allowance_after: int
    topup_after: int
    granted_after: int
    balance_after: int
    description: str


class DamagedHistory(Exception):
    """The stream cannot be exported past this event: its balances would be made up."""


async def account_history(store: EventStore, account_id: str) -> AsyncIterator[ExportedEvent]:
    """The account's events, oldest first, each with the balance after it.

    Raises DamagedHistory at a version missing or repeated, or an event that cannot be
    read (``ledger audit verify`` tells what happened): every balance after it would be
    wrong, and an export is what an auditor replays.
    """
    buckets = Buckets(0, 0)
    decode = MsgspecMapper().to_domain_event
    for expected, recorded in enumerate(await store.load(account_stream_id(account_id)), 1):
        where = f"{account_id}'s history stops at position {recorded.notification_id}"
        if recorded.originator_version != expected:
            raise DamagedHistory(
                f"{where}: version {recorded.originator_version} follows version "
                f"{expected - 1}, events are missing or repeated (see `ledger audit verify`)"
            )
        try:
            event = decode(recorded)
            data = msgspec.json.decode(recorded.state)  # exported as stored
        except Exception as error:  # a row changed by hand may not even name a type
            raise DamagedHistory(
                f"{where}: version {expected} cannot be read ({error}; see `ledger audit verify`)"
            ) from None
        kind = type(event).__name__
        change = change_of(event, buckets)
        if change is not None:
            buckets = apply_change(buckets, change)
        yield ExportedEvent(
            position=recorded.notification_id,
            version=recorded.originator_version,
            type=kind,
            recorded_at=recorded.recorded_at,
            hash=recorded.hash.hex(),
            data=data,
            allowance_change=change.allowance if change else 0,
            topup_change=change.topup if change else 0,
            granted_change=change.granted if change else 0,
            allowance_after=buckets.allowance,
            topup_after=buckets.topup,
            granted_after=buckets.granted,
            balance_after=buckets.balance,
            description=change.description if change else kind,
        )


def as_json_line(event: ExportedEvent) -> str:
    """One JSON object per line."""
    return msgspec.json.encode(event).decode()


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP's list for CSV injection)."""


def as_csv_row(event: ExportedEvent) -> str:
    """One CSV row, ``data`` as a JSON string, in CSV_COLUMNS order.

    A description that a spreadsheet would run as a formula (a spend's reason is its
    description, and a reason is any text) starts with ``'``; ``data`` keeps it as stored.
    """
    values = msgspec.structs.asdict(event)
    if event.description.startswith(_FORMULA_STARTS):
        values["description"] = "'" + event.description
    values["data"] = msgspec.json.encode(event.data).decode()
    values["recorded_at"] = in_utc(event.recorded_at)  # as the JSON Lines write it
    buffer = io.StringIO()
    # "\r\n" so that a cell holding either is quoted (the writer quotes what its line
    # terminator holds); the command ends each row itself.
    csv.writer(buffer, lineterminator="\r\n").writerow([values[c] for c in CSV_COLUMNS])
    return buffer.getvalue().removesuffix("\r\n")


def csv_header() -> str:
    return ",".join(CSV_COLUMNS)

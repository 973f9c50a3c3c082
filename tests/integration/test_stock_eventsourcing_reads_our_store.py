"""The stock eventsourcing library reads our event store as its own.

Audit requirement: the events stay readable by the eventsourcing library. Here
its own ``Application``, configured only through its environment settings and
its own mapper and transcoder classes (not our msgspec mapper), opens the same
database through its own PostgreSQL recorder (psycopg 3) and must rebuild the
same account, and list the same events in the same order, as our code does.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Notification, Transcoder
from eventsourcing.utils import Environment, EnvType, get_topic
from psycopg.conninfo import conninfo_to_dict

from ledger.domain.account import CreditAccount
from ledger.domain.events import AccountOpened, CreditsSpent
from ledger.domain.ids import account_stream_id
from ledger.service import Ledger
from ledger.store.event_store import EventStore, RecordedEvent
from tests.conftest import unique
from tests.support.ledger import save


class BareTimestampJSONTranscoder(JSONTranscoder):
    """The library's JSON transcoder, for state whose ``timestamp`` is a bare ISO 8601 string.

    Our state is plain JSON, so the stock transcoder already decodes it into a dict:
    only objects of exactly the keys ``_type_`` and ``_data_`` are treated as encoded
    values. Its mapper then sets that dict as the event's ``__dict__`` without
    looking at the event class, so ``timestamp`` (the one field of our events that
    is not a JSON type; the library would have written it as
    ``{"_type_": "datetime_iso", "_data_": ...}``) would stay a string, and with it
    the aggregate's ``created_on`` and ``modified_on``. It is decoded here with the
    library's own registered ``datetime_iso`` transcoding.
    """

    def decode(self, data: bytes) -> Any:
        state = super().decode(data)
        if isinstance(state.get("timestamp"), str):
            state["timestamp"] = self.names["datetime_iso"].decode(state["timestamp"])
        return state


class StockReader(Application[UUID]):
    """A stock eventsourcing application on our database.

    Its PostgreSQL recorder names the events table after the application:
    ``<name.lower()>_events``. Named "Stored", it reads our ``stored_events``
    itself, with no view in between.
    """

    name = "Stored"
    log_section_size = 100  # the most the notification log returns at once

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        # The stock method also merges os.environ; a developer's or CI's POSTGRES_*,
        # *_TOPIC or CIPHER_KEY variables must not change what this test reads.
        return Environment(name, env)

    def construct_transcoder(self) -> Transcoder:
        transcoder = BareTimestampJSONTranscoder()
        self.register_transcodings(transcoder)  # the stock uuid_hex, decimal_str, datetime_iso
        return transcoder


def stock_environment(database_url: str) -> dict[str, str]:
    """The library's PostgreSQL settings for the database at ``database_url``.

    libpq's own URL parser (through psycopg) understands both our URL forms,
    including a Unix socket directory given as ``?host=/dir``, which psycopg
    accepts as a host.
    """
    params = conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params["dbname"]),
        "POSTGRES_HOST": str(params.get("host") or "localhost"),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or getpass.getuser()),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        # Read only: no CREATE TABLE/INDEX/TYPE/FUNCTION in our database. (The
        # default "yes" would be harmless to stored_events, as every statement is
        # IF NOT EXISTS or a new object, but it would add the library's composite
        # type stored_event_uuid and function es_insert_events_uuid.)
        "CREATE_TABLE": "n",
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }


def read_with_stock_library(
    env: dict[str, str], stream_id: UUID, first: int, last: int
) -> tuple[CreditAccount, Sequence[Notification], list[Any]]:
    """Run in a worker thread: the library is synchronous."""
    with StockReader(env=env) as app:
        account = app.repository.get(stream_id)
        notifications = app.notification_log.select(start=first, stop=last, limit=100)
        events = [app.mapper.to_domain_event(n) for n in notifications]
    assert isinstance(account, CreditAccount)
    return account, notifications, events


async def write_history(ledger: Ledger) -> UUID:
    """An account's life through our own code, in five transactions of one or more events."""
    account = CreditAccount.open(unique("acct"), 1000, "2026-01")
    await save(ledger, account)
    account.spend(300, "report")
    await save(ledger, account)
    account.purchase("cs_test_a", 2500)
    account.spend(1200, "export")  # 700 from the allowance, 500 from the top-up
    await save(ledger, account)
    account.change_allowance(400)
    account.reset_month("2026-02")
    await save(ledger, account)
    account.claw_back("cs_test_a", 2500)  # past zero: the top-up balance goes to -500
    account.purchase("cs_test_b", 900)
    account.reverse_for_dispute("cs_test_b", "dp_test_1", 100)
    account.restore_after_dispute("cs_test_b", "dp_test_1", 100)
    account.spend(150, "api call")
    await save(ledger, account)
    return account.id


async def test_the_stock_library_rebuilds_our_account_and_lists_our_events(
    database_url: str, store: EventStore, ledger: Ledger
) -> None:
    stream_id = await write_history(ledger)
    ours = await ledger.repository.get(CreditAccount, stream_id)
    assert ours is not None
    recorded: list[RecordedEvent] = await store.load(stream_id)
    first, last = recorded[0].notification_id, recorded[-1].notification_id

    theirs, notifications, their_events = await asyncio.to_thread(
        read_with_stock_library, stock_environment(database_url), stream_id, first, last
    )

    assert stream_id == account_stream_id(ours.account_id)
    assert (ours.allowance_remaining, ours.topup_balance, ours.balance) == (250, 400, 650)
    for field in (
        "id",
        "version",
        "account_id",
        "allowance_remaining",
        "topup_balance",
        "monthly_allowance",
        "next_monthly_allowance",
        "period",
        "balance",
        "created_on",
        "modified_on",
    ):
        assert getattr(theirs, field) == getattr(ours, field), field
    assert type(theirs.modified_on) is type(ours.modified_on)

    # The notification log: our events, at our positions, in our order. Other
    # tests share the database, so only this stream's rows are compared.
    mine = [n for n in notifications if n.originator_id == stream_id]
    assert [(n.id, n.originator_version, n.topic) for n in mine] == [
        (r.notification_id, r.originator_version, r.topic) for r in recorded
    ]
    assert [n.id for n in notifications] == sorted(n.id for n in notifications)
    assert [n.topic for n in mine][:2] == [
        get_topic(AccountOpened),
        get_topic(CreditsSpent),
    ]
    # Each event, decoded by the library, equals our own decoding of it, field by field.
    mine_decoded = [e for e in their_events if e.originator_id == stream_id]
    assert [(type(e), vars(e)) for e in mine_decoded] == [
        (type(e), vars(e)) for e in map(ledger.repository.mapper.to_domain_event, recorded)
    ]

    # CREATE_TABLE=n: the library created nothing of its own in our database.
    connection = await asyncpg.connect(database_url)
    try:
        created = await connection.fetchrow(
            """SELECT to_regtype('public.stored_event_uuid') AS type,
                      to_regproc('public.es_insert_events_uuid') AS function"""
        )
    finally:
        await connection.close()
    assert created is not None
    assert (created["type"], created["function"]) == (None, None)

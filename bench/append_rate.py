"""Append rate of three ways to append events in a gap-free global order.

One event per command, and (but for the group committer's row, below) per transaction.
Each client appends to a stream of its own, version after version, as spends on an
account do (no version conflicts; the first version is written in the warm-up):

* plain insert: ``INSERT ... VALUES`` and COMMIT, no ordering protocol (the ceiling);
* table lock: ``LOCK TABLE ... IN EXCLUSIVE MODE``, ``NOTIFY``, ``INSERT ... SELECT FROM
  unnest(...)``, COMMIT, as the eventsourcing library's PostgreSQL recorder does;
* append() watermark: ``EventStore.append`` -> ``ledger.store.commit.write_batch`` -> the
  SQL write function ``append_one()`` (``ledger/store/sql/functions/21_append_one.sql``,
  ``append()``'s protocol in the shape of the lone one-event command each call is):
  the stream taken with a try-lock, the previous hash read, the transaction id,
  positions and ``recorded_at`` taken under the ordering lock (held for that alone: the
  inserts and the commit come after it), no NOTIFY inside. One command per call, as a lone request's batch is.
  This is the row the performance issue's target names.

And, for what the service itself does with the same load: the same one-event commands
through ``GroupCommitter`` (``ledger/store/commit.py``, its eight writers), the road every
command of the service takes, where commands that arrive together share an ``append()``
call, a transaction and its flush.

All of them run in the same process against the same server, on one pool of the
service's role (``ledger_service``, through ``api.database.create_pool``), interleaved,
so the ratio to plain inserts is meaningful on a noisy machine. The performance
issue's target: the watermark at least 0.9x plain inserts at 8 and 32 clients.
Afterwards the events appended through ``append()`` are paged through with
``EventStore.read_all`` and with a raw ``SELECT ... ORDER BY notification_id`` to show
what the watermark filter costs readers.

    python -m bench.append_rate [--seconds 5] [--clients 1,8,32] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

import asyncpg
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from api.database import SERVICE_SETTINGS, as_role, nothing_to_reset
from bench.postgres import ServerFacts, bench_database, postgres_server, server_facts
from ledger.domain.events import CreditsSpent
from ledger.store.commit import GroupCommitter, Writes
from ledger.store.event_store import EventStore, RecordedEvent
from ledger.store.migrate import SERVICE_ROLE, set_up

PLAIN_TABLE = "bench_plain_events"
LOCKED_TABLE = "bench_locked_events"
TOPIC = get_topic(CreditsSpent)
STATE = b'{"amount":1,"from_allowance":1,"from_topup":0,"reason":"bench"}'
WARM_UP_SECONDS = 0.5
READ_PAGE = 1000
READ_PASSES = 3
TARGET = 0.9
"""The watermark's rate against plain inserts at 8 and 32 clients (the performance issue)."""

# The same layout as stored_events, without its ordering protocol; the service's role may
# write it (LOCK ... IN EXCLUSIVE MODE needs UPDATE).
_TABLE_DDL = """
CREATE TABLE {table} (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text NOT NULL,
    state bytea NOT NULL,
    notification_id bigserial NOT NULL,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (originator_id, originator_version)
);
CREATE UNIQUE INDEX {table}_notification_id_idx ON {table} (notification_id);
GRANT SELECT, INSERT, UPDATE ON {table} TO {role};
GRANT USAGE ON SEQUENCE {table}_notification_id_seq TO {role};
"""

_RAW_READ = """SELECT originator_id, originator_version, topic, state, notification_id, recorded_at,
    hash
    FROM stored_events WHERE notification_id > $1 ORDER BY notification_id LIMIT $2"""


@dataclass
class Stream:
    """One client's stream: its id and the next version to append."""

    originator_id: UUID = field(default_factory=uuid4)
    version: int = 1

    def next_event(self) -> StoredEvent:
        return StoredEvent(
            originator_id=self.originator_id,
            originator_version=self.version,
            topic=TOPIC,
            state=STATE,
        )


Append = Callable[[Stream], Awaitable[None]]
"""One committed append of the stream's next event."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the three designs -------------------------------------------------------------------


def plain_insert(pool: asyncpg.Pool) -> Append:
    sql = (
        f"INSERT INTO {PLAIN_TABLE} (originator_id, originator_version, topic, state) "
        "VALUES ($1, $2, $3, $4)"
    )

    async def append(stream: Stream) -> None:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(sql, stream.originator_id, stream.version, TOPIC, STATE)
        stream.version += 1

    return append


def _locked_insert_sql(originator_id: UUID, version: int) -> str:
    """LOCK, NOTIFY and INSERT in one round trip, as the library pipelines them with psycopg.

    Sent as one simple query so the lock is held for no more client round trips than
    in the library (the INSERT's result, then COMMIT): values are inlined literals.
    """
    return (
        f"LOCK TABLE {LOCKED_TABLE} IN EXCLUSIVE MODE; NOTIFY {LOCKED_TABLE}; "
        f"INSERT INTO {LOCKED_TABLE} (originator_id, originator_version, topic, state) "
        f"SELECT * FROM unnest(ARRAY['{originator_id}'::uuid], ARRAY[{version:d}::bigint], "
        f"ARRAY['{TOPIC}'::text], ARRAY['\\x{STATE.hex()}'::bytea]) RETURNING notification_id"
    )


def table_lock(pool: asyncpg.Pool) -> Append:
    async def append(stream: Stream) -> None:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(_locked_insert_sql(stream.originator_id, stream.version))
        stream.version += 1

    return append


def watermark(pool: asyncpg.Pool) -> Append:
    """One command through ``EventStore.append``: a lone one-event command, ``append_one()``."""
    store = EventStore(pool)

    async def append(stream: Stream) -> None:
        await store.append([stream.next_event()])
        stream.version += 1

    return append


class ThroughCommitter:
    """One command through the group committer, as every command of the service goes."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.committer = GroupCommitter(pool)

    async def __call__(self, stream: Stream) -> None:
        await self.committer.commit(Writes(events=[stream.next_event()]))
        stream.version += 1

    async def stop(self) -> None:
        await self.committer.stop()


@dataclass(frozen=True)
class Design:
    key: str
    label: str
    make: Callable[[asyncpg.Pool], Append]


DESIGNS = (
    Design("plain", "plain insert", plain_insert),
    Design("lock", "table lock", table_lock),
    Design("append", "append() watermark", watermark),
    Design("committer", "append() via the group committer", ThroughCommitter),
)
TARGET_DESIGN = [design.key for design in DESIGNS].index("append")
COMMITTER_DESIGN = [design.key for design in DESIGNS].index("committer")


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Tally:
    """Committed appends, the wall time they took and each one's latency in seconds."""

    commits: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.commits += other.commits
        self.seconds += other.seconds
        self.latencies.extend(other.latencies)

    @property
    def rate(self) -> float:
        return self.commits / self.seconds if self.seconds else 0.0

    def percentile_ms(self, percent: int) -> float:
        if len(self.latencies) < 2:
            return 1000 * sum(self.latencies)
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return 1000 * cuts[percent - 1]


async def run_phase(append: Append, streams: list[Stream], seconds: float) -> Tally:
    """One worker per stream appends back to back until ``seconds`` have passed."""
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(stream: Stream) -> None:
        while (start := time.perf_counter()) < deadline:
            await append(stream)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker(stream) for stream in streams))
    return Tally(len(latencies), time.perf_counter() - started, latencies)


async def service_pool(url: str, size: int) -> asyncpg.Pool:
    """Connections as the service makes them: its role, its session settings, and no reset
    round trip when one goes back to the pool.

    (Not ``api.database.create_pool``: its set-up would re-apply the grants, which take
    the comparison tables' grants away again.)
    """
    return await asyncpg.create_pool(
        as_role(url, SERVICE_ROLE),
        min_size=size,
        max_size=size,
        server_settings=SERVICE_SETTINGS,
        reset=nothing_to_reset,
    )


async def measure_clients(url: str, clients: int, seconds: float, rounds: int) -> list[Tally]:
    """Each design's tally at this many clients, rounds interleaved across designs."""
    pool = await service_pool(url, clients + 1)  # the committer's wake-up takes one more
    appends: list[Append] = []
    try:
        appends = [design.make(pool) for design in DESIGNS]
        streams = [[Stream() for _ in range(clients)] for _ in DESIGNS]
        for append, own in zip(appends, streams, strict=True):
            await run_phase(append, own, WARM_UP_SECONDS)
        progress(f"[{clients:>3} clients] warmed up")
        tallies = [Tally() for _ in DESIGNS]
        for round_number in range(1, rounds + 1):
            for design, append, own, total in zip(DESIGNS, appends, streams, tallies, strict=True):
                tally = await run_phase(append, own, seconds / rounds)
                total.add(tally)
                progress(
                    f"[{clients:>3} clients] round {round_number}/{rounds} {design.label:<18}"
                    f" {tally.commits:>7,} commits, {tally.rate:>7,.0f}/s"
                )
        return tallies
    finally:
        for append in appends:
            if isinstance(append, ThroughCommitter):
                await append.stop()
        await pool.close()


async def measure_appends(
    url: str, client_counts: list[int], seconds: float, rounds: int
) -> list[tuple[int, list[Tally]]]:
    """Every client count in turn (on a database ``prepare_schema`` has set up)."""
    return [
        (clients, await measure_clients(url, clients, seconds, rounds)) for clients in client_counts
    ]


async def page_through(read: Callable[[int], Awaitable[list[RecordedEvent]]]) -> Tally:
    """Read every event page by page; the tally counts events, not commits."""
    started = time.perf_counter()
    after, count = 0, 0
    while events := await read(after):
        count += len(events)
        after = events[-1].notification_id
    return Tally(count, time.perf_counter() - started)


async def measure_readers(url: str) -> tuple[Tally, Tally]:
    """Median of a few passes over stored_events: read_all, then the unfiltered query."""
    pool = await service_pool(url, 1)
    store = EventStore(pool)

    async def watermarked(after: int) -> list[RecordedEvent]:
        return await store.read_all(after, limit=READ_PAGE)

    async def raw(after: int) -> list[RecordedEvent]:
        async with pool.acquire() as connection:
            rows = await connection.fetch(_RAW_READ, after, READ_PAGE)
        return [RecordedEvent(*row) for row in rows]

    try:
        passes: tuple[list[Tally], list[Tally]] = ([], [])
        for number in range(1, READ_PASSES + 1):
            for read, found in zip((watermarked, raw), passes, strict=True):
                found.append(await page_through(read))
            progress(f"[readers] pass {number}/{READ_PASSES}: {passes[0][-1].commits:,} events")
        return (
            sorted(passes[0], key=lambda t: t.rate)[READ_PASSES // 2],
            sorted(passes[1], key=lambda t: t.rate)[READ_PASSES // 2],
        )
    finally:
        await pool.close()


# --- the benchmark's database ---------------------------------------------------------


async def prepare_schema(url: str) -> ServerFacts:
    """Set the event store up, create the comparison tables, read the server's settings."""
    connection = await asyncpg.connect(url)
    try:
        await set_up(connection)
        for table in (PLAIN_TABLE, LOCKED_TABLE):
            await connection.execute(_TABLE_DDL.format(table=table, role=SERVICE_ROLE))
        return await server_facts(connection)
    finally:
        await connection.close()


# --- report --------------------------------------------------------------------------------


def append_table(results: list[tuple[int, list[Tally]]]) -> list[str]:
    lines = [
        "| clients | design | commits/s | p50 ms | p99 ms | vs plain |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for clients, tallies in results:
        baseline = tallies[0].rate
        for design, tally in zip(DESIGNS, tallies, strict=True):
            ratio = tally.rate / baseline if baseline else 0.0
            lines.append(
                f"| {clients} | {design.label} | {tally.rate:,.0f} | {tally.percentile_ms(50):.2f}"
                f" | {tally.percentile_ms(99):.2f} | {ratio:.2f} |"
            )
    return lines


def watermark_ratio(tallies: list[Tally]) -> float:
    """The append() design's rate against plain inserts at one client count."""
    plain = tallies[0].rate
    return tallies[TARGET_DESIGN].rate / plain if plain else 0.0


def verdicts(results: list[tuple[int, list[Tally]]]) -> list[str]:
    """One line per client count the target names (8 and 32) that was measured."""
    return [
        f"append() watermark at {clients} clients: {watermark_ratio(tallies):.2f}x plain inserts"
        f" (target ≥ {TARGET}x: {'met' if watermark_ratio(tallies) >= TARGET else 'not met'})."
        for clients, tallies in results
        if clients in (8, 32)
    ]


def reader_table(watermarked: Tally, raw: Tally) -> list[str]:
    ratio = watermarked.rate / raw.rate if raw.rate else 0.0
    return [
        f"| reader, pages of {READ_PAGE} | events | events/s | vs raw |",
        "|---|---:|---:|---:|",
        f"| `EventStore.read_all` (watermark filter) | {watermarked.commits:,}"
        f" | {watermarked.rate:,.0f} | {ratio:.2f} |",
        f"| raw `SELECT ... ORDER BY notification_id` | {raw.commits:,} | {raw.rate:,.0f} | 1.00 |",
    ]


def report(
    args: argparse.Namespace,
    source: str,
    server: ServerFacts,
    results: list[tuple[int, list[Tally]]],
    readers: tuple[Tally, Tally],
) -> str:
    lines = [
        "## Append rate: one event per command, each client on a stream of its own",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc); PostgreSQL {server.version} from {source};"
        f" synchronous_commit={server.synchronous_commit}, fsync={server.fsync}.",
        f"Each design ran {args.seconds:g} s per client count in {args.rounds} interleaved"
        f" rounds after a {WARM_UP_SECONDS:g} s warm-up; latency is per append, pool"
        " acquire to release (through the group committer: queued to committed). One"
        " transaction per command but through the group committer, whose calls take what"
        " is queued.",
        "",
        *append_table(results),
        "",
        *verdicts(results),
        "",
        "Reading back the watermark design's events (no writers running, median of"
        f" {READ_PASSES} passes):",
        "",
        *reader_table(*readers),
    ]
    if readers[0].commits != readers[1].commits:
        lines += ["", "WARNING: read_all and the raw query returned different numbers of events."]
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------


def client_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from error
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts must be positive integers")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.append_rate",
        description="Commits/s and latency of plain inserts, a table lock and the watermark"
        " design (append() through EventStore.append), measured in one run; then read_all's"
        " page rate.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="measured seconds per design and client count (default 5)",
    )
    parser.add_argument(
        "--clients",
        type=client_counts,
        default=[1, 8, 32],
        help="comma-separated concurrent writers, one connection each (default 1,8,32)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="interleaved rounds the seconds are split into (default 2)",
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to create the benchmark's database on (default:"
        " DATABASE_URL, else a throw-away embedded PostgreSQL)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    return args


async def benchmark(args: argparse.Namespace, server_url: str, source: str) -> str:
    async with bench_database(server_url) as url:
        server = await prepare_schema(url)
        progress(
            f"PostgreSQL {server.version} from {source}; synchronous_commit="
            f"{server.synchronous_commit}"
        )
        if server.synchronous_commit != "on":
            progress("WARNING: synchronous_commit is not on: commits are not durable")
        results = await measure_appends(url, args.clients, args.seconds, args.rounds)
        readers = await measure_readers(url)
        return report(args, source, server, results, readers)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.database_url:
        database_url, origin = args.database_url, "--database-url"
    else:
        database_url, origin = os.environ.get("DATABASE_URL"), "DATABASE_URL"
    with postgres_server(database_url, origin) as (server_url, source):
        print(asyncio.run(benchmark(args, server_url, source)), flush=True)


if __name__ == "__main__":
    main()

"""Fill a database with N real ledger events, fast, for the replay benchmarks.

The events are made by the domain's own aggregates (``CreditAccount``,
``CheckoutSession``), encoded by the service's ``MsgspecMapper`` and appended through
the real ``EventStore.append`` (the SQL ``append()``: hash chain, ordering lock), in
large batches over a few connections at once. Each account's story:

* ``AccountOpened`` (allowance 1,000, period 2026-09);
* a paid top-up: ``CheckoutRequested`` and ``CheckoutPaid`` on the session's stream,
  ``CreditsPurchased`` on the account's (again whenever the balance runs low);
* spends of 1-40 credits (``CreditsSpent``), never overdrawing, each with its
  Idempotency-Key's claim (``claims``: its answer, as the service records a spend's);
* ``MonthlyAllowanceReset`` for 2026-10 and 2026-11 along the way.

So ``ledger audit verify`` passes on the result and ``ledger projections rebuild`` has
every kind of view row to write. The total is N rounded up to the end of a story.

    python -m bench.generate --database-url URL --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import msgspec
from eventsourcing.persistence import StoredEvent

from ledger.commands import SpendCredits
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.handlers.accounts import spend_claim, spent_answer
from ledger.store.event_store import EventStore
from ledger.store.mapper import MsgspecMapper
from ledger.store.migrate import set_up

EVENTS_PER_ACCOUNT = 100
"""Roughly: account events plus its sessions' events."""
BATCH_EVENTS = 1000
CONNECTIONS = 4
SEED = 20261101


ClaimRow = tuple[str, str, bytes, bytes]
"""A claim's scope, key, request hash and answer."""
_INSERT_CLAIMS = """INSERT INTO claims (scope, key, request_hash, response)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[])"""


@dataclass(frozen=True)
class Generated:
    events: int
    accounts: int
    sessions: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def account_story(
    number: int, mapper: MsgspecMapper, rng: random.Random
) -> tuple[list[StoredEvent], int, list[ClaimRow]]:
    """One account's events (its stream, then each of its sessions' streams, each contiguous).

    Streams must be contiguous and complete within one append: ``append()`` chains
    an event to the one before it in the same call, or to a committed row.
    """
    account_id = f"acct_gen_{number:07d}"
    account = CreditAccount.open(account_id, 1000, "2026-09")
    sessions: list[CheckoutSession] = []
    claims: list[ClaimRow] = []
    events = 1
    resets = {EVENTS_PER_ACCOUNT // 3: "2026-10", 2 * EVENTS_PER_ACCOUNT // 3: "2026-11"}

    def buy(credits: int) -> None:
        nonlocal events
        session_id = f"cs_gen_{number:07d}_{len(sessions):03d}"
        session = CheckoutSession.request(
            session_id=session_id,
            account_id=account_id,
            credits=credits,
            amount=credits,
            currency="usd",
            checkout_url=f"https://checkout.invalid/c/pay/{session_id}",
            expires_at=1_790_000_000,
        )
        paid = session.pay(
            payment_intent=f"pi_gen_{number:07d}_{len(sessions):03d}",
            amount_paid=credits,
            currency="usd",
        )
        account.purchase(session_id=session_id, credits=paid)
        sessions.append(session)
        events += 3

    buy(rng.choice((500, 1000, 2500)))
    while events < EVENTS_PER_ACCOUNT:
        if period := resets.get(events):
            account.reset_month(period)
            events += 1
            continue
        amount = rng.randint(1, 40)
        if amount > account.balance:
            buy(rng.choice((500, 1000, 2500)))
            continue
        reason = rng.choice(("api call", "export", "report", "bench"))
        spent = account.spend(amount, reason)
        events += 1
        claim = spend_claim(
            SpendCredits(
                account_id=account_id, amount=amount, reason=reason, idempotency_key=str(events)
            )
        )
        answer = spent_answer(account, spent)
        claims.append((claim.scope, claim.key, claim.fingerprint, msgspec.json.encode(answer)))
    stored = [mapper.to_stored_event(e) for e in account.collect_events()]
    for session in sessions:
        stored.extend(mapper.to_stored_event(e) for e in session.collect_events())
    return stored, len(sessions), claims


def batches(
    total: int, batch_events: int
) -> Iterator[tuple[list[StoredEvent], int, int, list[ClaimRow]]]:
    """(events, accounts, sessions, claims) per batch until ``total`` events are made."""
    mapper = MsgspecMapper()
    rng = random.Random(SEED)
    made = number = 0
    while made < total:
        batch: list[StoredEvent] = []
        claims: list[ClaimRow] = []
        accounts = sessions = 0
        while len(batch) < batch_events and made + len(batch) < total:
            stored, session_count, story_claims = account_story(number, mapper, rng)
            number += 1
            accounts += 1
            sessions += session_count
            batch.extend(stored)
            claims.extend(story_claims)
        made += len(batch)
        yield batch, accounts, sessions, claims


async def generate(
    url: str, total: int, *, batch_events: int = BATCH_EVENTS, connections: int = CONNECTIONS
) -> Generated:
    """Append about ``total`` events to the (migrated) database at ``url``."""
    pool = await asyncpg.create_pool(url, min_size=connections, max_size=connections)
    try:
        async with pool.acquire() as connection:
            await set_up(connection)
        store = EventStore(pool)

        async def write(batch: list[StoredEvent], claims: list[ClaimRow]) -> None:
            await store.append(batch)
            if claims:  # after its events, as the service never records a claim without them
                await pool.execute(_INSERT_CLAIMS, *map(list, zip(*claims, strict=True)))

        started = time.perf_counter()
        in_flight: set[asyncio.Future[None]] = set()
        events = accounts = sessions = 0
        reported = 0
        for batch, batch_accounts, batch_sessions, claims in batches(total, batch_events):
            if len(in_flight) >= connections:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            in_flight.add(asyncio.create_task(write(batch, claims)))
            await asyncio.sleep(0)  # let the append send its query while we build the next
            events += len(batch)
            accounts += batch_accounts
            sessions += batch_sessions
            if events - reported >= 100_000:
                reported = events
                elapsed = time.perf_counter() - started
                progress(f"[generate] {events:,} events, {events / elapsed:,.0f}/s")
        for task in asyncio.as_completed(in_flight):
            await task
        seconds = time.perf_counter() - started
        async with pool.acquire() as connection:
            await connection.execute("ANALYZE stored_events")
            await connection.execute("ANALYZE claims")
        return Generated(events, accounts, sessions, seconds)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.generate",
        description="Append about N real ledger events (accounts, purchases, spends, resets)"
        " through EventStore.append, in large batches, to an existing database.",
    )
    parser.add_argument("--database-url", required=True, help="the database to fill")
    parser.add_argument("--events", type=int, default=1_000_000, help="how many (default 1M)")
    parser.add_argument("--batch", type=int, default=BATCH_EVENTS, help="events per append")
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help="appends in flight at once"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(
        generate(
            args.database_url, args.events, batch_events=args.batch, connections=args.connections
        )
    )
    print(
        f"appended {result.events:,} events ({result.accounts:,} accounts, {result.sessions:,}"
        f" checkout sessions) in {result.seconds:.1f} s: {result.rate:,.0f} events/s"
    )


if __name__ == "__main__":
    main()

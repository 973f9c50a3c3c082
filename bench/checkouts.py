"""The Checkout sessions a webhook load pays, recorded as the service records a purchase.

A real ``checkout.session.completed`` is for a session the ledger recorded when the
customer asked to buy (``CheckoutRequested``, from ``POST /v1/credits/purchase``).
Asking the Stripe stand-in for tens of thousands of sessions would take longer than the
load itself, so the benchmark appends the ``CheckoutRequested`` events the service would
have appended, made by the domain's ``CheckoutSession`` and stored through the real
``EventStore.append``, before the deliveries for them are sent. Without them every
delivery would take the recovery path for a session the store never saw (a warning
logged per delivery), which no healthy payment takes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

from eventsourcing.persistence import StoredEvent

from ledger.domain.checkout import CheckoutSession
from ledger.store.event_store import EventStore
from ledger.store.mapper import MsgspecMapper

CREDITS = 100
"""Each session buys 100 credits for 100 cents: what its delivery says it paid."""
CURRENCY = "usd"
BATCH = 2_000


def session_id(nonce: str, number: int) -> str:
    return f"cs_bench_{nonce}_{number:07d}"


def sessions(nonce: str, count: int, prefix: str, accounts: int) -> Iterator[tuple[str, str]]:
    """``(session id, account id)`` of each session of one load, in delivery order."""
    for number in range(count):
        yield session_id(nonce, number), f"{prefix}{number % accounts:04d}"


async def record_requested(
    store: EventStore, nonce: str, count: int, prefix: str, accounts: int
) -> None:
    """Append ``CheckoutRequested`` for every session of one load."""
    mapper = MsgspecMapper()
    expires_at = int(time.time()) + 24 * 3600
    batch: list[StoredEvent] = []
    for session, account in sessions(nonce, count, prefix, accounts):
        requested = CheckoutSession.request(
            session_id=session,
            account_id=account,
            credits=CREDITS,
            amount=CREDITS,
            currency=CURRENCY,
            checkout_url=f"https://checkout.invalid/c/pay/{session}",
            expires_at=expires_at,
        )
        batch.extend(mapper.to_stored_event(e) for e in requested.collect_events())
        if len(batch) >= BATCH:
            await store.append(batch)
            batch = []
    if batch:
        await store.append(batch)


async def new_deliveries(
    store: EventStore, url: str, count: int, prefix: str, accounts: int, secret: str
) -> list[str]:
    """``bench.load webhook`` arguments (without connections or duration) of ``count``
    deliveries to ``url`` signed with ``secret``, for sessions recorded just now."""
    nonce = secrets.token_hex(4)
    await record_requested(store, nonce, count, prefix, accounts)
    return ["webhook", "--url", url, "--accounts-prefix", prefix, "--accounts", str(accounts),
            "--secret", secret, "--count", str(count), "--nonce", nonce]  # fmt: skip

"""Wiring the ledger's parts together (the API, the CLI and the tests all start here)."""

from __future__ import annotations

import asyncpg

from ledger.clock_guard import ClockGuard
from ledger.clock_skew import DEFAULT_MAX_SKEW_SECONDS
from ledger.ports import (
    CheckoutRequest,
    Clock,
    CreatedCheckout,
    PaymentGateway,
    PaymentGatewayError,
    system_clock,
)
from ledger.service import CheckoutLinks, Ledger, Pricing
from ledger.store.claims import Claims
from ledger.store.commit import WRITERS, GroupCommitter
from ledger.store.event_store import EventStore
from ledger.store.read_connections import Pool
from ledger.store.repository import Repository
from ledger.unit_of_work import UnitOfWork


class NoPaymentGateway:
    """For a ledger that takes no purchases (the CLI, tests of other things)."""

    async def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        raise PaymentGatewayError("this process has no payment gateway")

    async def expire_checkout(self, session_id: str) -> None:
        raise PaymentGatewayError("this process has no payment gateway")


def build_ledger(
    pool: asyncpg.Pool,
    *,
    gateway: PaymentGateway | None = None,
    pricing: Pricing | None = None,
    links: CheckoutLinks | None = None,
    clock: Clock = system_clock,
    reads: Pool | None = None,
    writers: int = WRITERS,
    max_clock_skew: float = DEFAULT_MAX_SKEW_SECONDS,
) -> Ledger:
    """The ledger on ``pool``: store, repository, group committer, unit of work; the reads
    no command makes (balances from the store, holds, sessions, replays as of a moment) on
    ``reads`` when given (ledger/store/read_connections.py), with the commands' memory;
    ``writers``: the group committer's (``GroupCommitter``); ``max_clock_skew``: how far (s)
    ``clock`` may be from the database's before commands are refused, once measured
    (ledger/clock_guard.py)."""
    repository = Repository(EventStore(pool))
    uow = UnitOfWork(repository, GroupCommitter(pool, writers), Claims(pool))
    return Ledger(
        uow,
        gateway or NoPaymentGateway(),
        pricing or Pricing(unit_amount=1, currency="usd"),
        links or CheckoutLinks(success_url="http://127.0.0.1/ok", cancel_url="http://127.0.0.1/no"),
        clock,
        reads=None
        if reads is None
        else (repository.reading_from(EventStore(reads)), Claims(reads)),
        clock_guard=ClockGuard(clock, max_clock_skew),
    )

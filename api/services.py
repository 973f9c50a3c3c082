"""The composition of the application, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from litestar.di import NamedDependency

from api.access.page_tokens import PageTokens
from api.access.tokens import TokenService
from api.database import read_connections
from api.read_side import ReadSide
from api.settings import Settings
from ledger.bootstrap import build_ledger
from ledger.ports import Clock, PaymentGateway, system_clock
from ledger.service import CheckoutLinks, Ledger, Pricing
from ledger.store.commit import WRITERS
from ledger.store.event_store import EventStore
from ledger.store.read_connections import Pool, ReadConnections
from projections.queries import Views


@dataclass(frozen=True)
class Services:
    """What the routes and the CLI call."""

    pool: asyncpg.Pool
    ledger: Ledger
    tokens: TokenService
    views: Views
    webhook_secrets: list[str]
    database_url: str
    default_monthly_allowance: int
    page_tokens: PageTokens
    """Signs and checks the checkout success links (api/access/page_tokens.py)."""
    reads: ReadSide
    """The view reads: on the standby when there is one (api/read_side.py)."""
    webhook_allow_private: bool = False
    """Whether webhook endpoints may be on loopback, private or other non-public addresses."""
    webhook_https_only: bool = False
    """Whether new webhook endpoints must be ``https://`` unless on this machine (production)."""
    stripe_livemode: bool = False
    """The mode of the Stripe key: webhooks of the other mode are not applied."""
    admin_url: str | None = None
    """What may set the database up and rebuild views (None: the service's role may not)."""
    read_pool: ReadConnections | None = None
    """The share of ``pool`` the reads of the primary take connections from (None: all)."""

    @property
    def store(self) -> EventStore:
        return self.ledger.store

    @property
    def reading(self) -> Pool:
        """What a read no command needs takes its connection from: ``read_pool``, or the
        pool where there is no share (the CLI)."""
        return self.read_pool or self.pool


ServicesDependency = NamedDependency[Services]
"""Declares a route's ``services`` parameter as the injected Services."""


def build_services(
    pool: asyncpg.Pool,
    settings: Settings,
    gateway: PaymentGateway,
    webhook_secrets: list[str],
    database_url: str,
    page_key: str,
    standby: asyncpg.Pool | None = None,
    clock: Clock = system_clock,
) -> Services:
    """Wire the ledger, tokens and views on ``pool`` (view reads on ``standby`` if given);
    reads of the primary take at most their share of it (``read_connections``); ``clock``:
    the commands' (the tests set it apart from the database's)."""
    page_tokens = PageTokens(page_key)
    writers = WRITERS  # the group committer's, and what the reads' share leaves them
    reads = read_connections(pool, writers)
    return Services(
        pool=pool,
        ledger=build_ledger(
            pool,
            gateway=gateway,
            pricing=Pricing(
                unit_amount=settings.credit_unit_amount, currency=settings.credit_currency
            ),
            links=CheckoutLinks(
                success_url=f"{settings.public_url}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}",
                cancel_url=f"{settings.public_url}/checkout/cancel?session_id={{CHECKOUT_SESSION_ID}}",
                success_token=page_tokens.for_checkout,
            ),
            reads=reads,
            writers=writers,
            clock=clock,
            max_clock_skew=settings.max_clock_skew_seconds,
        ),
        tokens=TokenService(pool, reads=reads),
        views=Views(reads),
        webhook_secrets=webhook_secrets,
        database_url=database_url,
        default_monthly_allowance=settings.default_monthly_allowance,
        page_tokens=page_tokens,
        reads=ReadSide(reads, standby),
        webhook_allow_private=settings.webhook_allow_private,
        webhook_https_only=settings.production,
        stripe_livemode=settings.stripe_livemode,
        read_pool=reads,
    )

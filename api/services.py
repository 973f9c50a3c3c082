"""The composition of the application services, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from litestar.di import NamedDependency

from api.settings import Settings
from ledger.accounts import AccountService
from ledger.holds import HoldService
from ledger.payments import PaymentService
from ledger.ports import PaymentGateway
from ledger.purchases import CheckoutLinks, Pricing, PurchaseService
from ledger.repository import Repository
from ledger.store.event_store import EventStore
from ledger.store.idempotency import IdempotencyStore
from ledger.tokens import TokenService
from projections.queries import Views


@dataclass(frozen=True)
class Services:
    """What the routes and the CLI call."""

    pool: asyncpg.Pool
    store: EventStore
    repository: Repository
    tokens: TokenService
    accounts: AccountService
    holds: HoldService
    purchases: PurchaseService
    payments: PaymentService
    views: Views
    webhook_secrets: list[str]
    database_url: str
    default_monthly_allowance: int


ServicesDependency = NamedDependency[Services]
"""Declares a route's ``services`` parameter as the injected Services."""


def build_services(
    pool: asyncpg.Pool,
    settings: Settings,
    gateway: PaymentGateway,
    webhook_secrets: list[str],
    database_url: str,
) -> Services:
    """Wire the store, the services and the payment gateway together."""
    store = EventStore(pool)
    repository = Repository(store)
    idempotency = IdempotencyStore(pool)
    accounts = AccountService(repository, store, idempotency)
    pricing = Pricing(unit_amount=settings.credit_unit_amount, currency=settings.credit_currency)
    return Services(
        pool=pool,
        store=store,
        repository=repository,
        tokens=TokenService(pool),
        accounts=accounts,
        holds=HoldService(accounts),
        purchases=PurchaseService(
            repository=repository,
            store=store,
            gateway=gateway,
            idempotency=idempotency,
            pricing=pricing,
            links=CheckoutLinks(
                success_url=f"{settings.public_url}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}",
                cancel_url=f"{settings.public_url}/checkout/cancel?session_id={{CHECKOUT_SESSION_ID}}",
            ),
        ),
        payments=PaymentService(repository, pricing, idempotency),
        views=Views(pool),
        webhook_secrets=webhook_secrets,
        database_url=database_url,
        default_monthly_allowance=settings.default_monthly_allowance,
    )

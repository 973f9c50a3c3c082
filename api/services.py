"""The composition of the application, built once per process."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace

import asyncpg

from api.access.page_tokens import PageTokens
from api.access.tokens import TokenService
from api.database import SERVICE_SETTINGS, describe, open_database, read_connections
from api.read_side import ReadSide, open_standby_pool
from api.settings import Settings, SettingsError, stripe_deliveries_refused, unlisted_currency
from ledger.bootstrap import NoPaymentGateway, build_ledger
from ledger.ports import Clock, PaymentGateway, system_clock
from ledger.service import CheckoutLinks, Ledger, Pricing
from ledger.store.commit import WRITERS
from ledger.store.event_store import EventStore
from ledger.store.read_connections import Pool, ReadConnections
from projections.queries import Views

log = logging.getLogger("ledger")


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


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    stripe_api_base: str | None = None,
    set_up_first: bool = True,
    pool_wait: float | None = None,
    server_settings: dict[str, str] = SERVICE_SETTINGS,
    payments: bool = True,
    clock: Clock = system_clock,
) -> AsyncIterator[Services]:
    """Database pool, migrations, Stripe gateway and services; closed on exit.

    ``set_up_first=False``: no migrations nor grants applied (``service_url``).
    ``pool_wait``: how long a connection is waited for (``create_pool``; the API's).
    ``server_settings``: the pool's sessions' (``create_pool``).
    ``payments=False``: for a command that takes no payment and makes no link (tokens,
    accounts, grants): no Stripe client, webhook secret or page key, so that production's
    operator need not hold those secrets to run it. ``clock``: the commands' (the tests').

    The ledger's clock is measured against the database's once here, so that a command of
    the CLI, too, is refused while it is too far off (ledger/clock_guard.py); the API
    measures it again in the background."""
    async with AsyncExitStack() as stack:
        pool, _, database_url, given_url = await stack.enter_async_context(
            open_database(
                settings,
                set_up_first=set_up_first,
                pool_wait=pool_wait,
                server_settings=server_settings,
            )
        )
        log.debug("event store: %s", describe(database_url))
        gateway: PaymentGateway = NoPaymentGateway()
        if payments:
            from ledger.adapters.stripe_gateway import StripeGateway

            gateway = stripe = StripeGateway(
                settings.stripe_secret_key or "sk_test_standin",
                api_base=stripe_api_base or settings.stripe_api_base,
            )
            stack.push_async_callback(stripe.close)
            if (unlisted := unlisted_currency(settings)) is not None:
                log.warning("%s", unlisted)
        standby = await stack.enter_async_context(open_standby_pool(settings.database_read_url))
        services = build_services(
            pool,
            settings,
            gateway,
            webhook_secrets(settings) if payments else [],
            database_url,
            page_key(settings) if payments else secrets.token_hex(32),  # signs no link
            standby,
            clock,
        )
        # Before the pool closes: a command's writes are committed, the writers' kept
        # connections given back, and no task of the committer outlives it.
        stack.push_async_callback(services.ledger.uow.committer.stop)
        await services.ledger.clock_guard.check(pool)
        yield replace(services, admin_url=settings.database_admin_url or given_url)


def webhook_secrets(settings: Settings) -> list[str]:
    """The configured secrets; in development, the stand-in's generated one."""
    if settings.webhook_secrets or settings.production:
        return settings.webhook_secrets
    if (refused := stripe_deliveries_refused(settings)) is not None:
        log.warning("%s", refused)
    from api.development import development_webhook_secret

    return [development_webhook_secret(settings)]


def page_key(settings: Settings) -> str:
    """``LEDGER_PAGE_KEY``; in development, one generated once under the data folder."""
    if settings.page_key:
        return settings.page_key
    if settings.production:
        raise SettingsError("LEDGER_ENV=production needs LEDGER_PAGE_KEY")
    from api.development import development_page_key

    return development_page_key(settings)

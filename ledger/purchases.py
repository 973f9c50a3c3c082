"""Buying credits: a Stripe Checkout session per purchase, recorded as CheckoutRequested."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import msgspec

from ledger.domain.checkout import CheckoutSession
from ledger.domain.errors import AccountNotFound, InvalidAmount
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.ports import CheckoutRequest, Clock, PaymentGateway, system_clock
from ledger.repository import Repository
from ledger.store.event_store import ConcurrencyConflict, EventStore
from ledger.store.idempotency import (
    IdempotencyKeyTaken,
    IdempotencyStore,
    StoredAnswer,
    replay,
    request_fingerprint,
)

MIN_CREDITS = 100
MAX_CREDITS = 10_000
CHECKOUT_LIFETIME = timedelta(hours=1)


class Pricing(msgspec.Struct, frozen=True):
    """The price of one credit, in the currency's minor unit."""

    unit_amount: int
    currency: str


class CheckoutLinks(msgspec.Struct, frozen=True):
    """Where Stripe sends the customer back to."""

    success_url: str
    cancel_url: str


class RequestCheckout(msgspec.Struct, frozen=True):
    """Command: start buying ``credits`` for ``account_id``."""

    account_id: str
    credits: int
    idempotency_key: str | None = None


class CheckoutStarted(msgspec.Struct, frozen=True):
    """The answer: where the customer pays."""

    checkout_url: str
    session_id: str


class PurchaseService:
    """Creates Checkout sessions and records them, once per request."""

    def __init__(
        self,
        repository: Repository,
        store: EventStore,
        gateway: PaymentGateway,
        idempotency: IdempotencyStore,
        pricing: Pricing,
        links: CheckoutLinks,
        clock: Clock = system_clock,
    ) -> None:
        self.repository = repository
        self.store = store
        self.gateway = gateway
        self.idempotency = idempotency
        self.pricing = pricing
        self.links = links
        self.clock = clock

    async def find_session(self, session_id: str) -> CheckoutSession | None:
        """The Checkout session as its events leave it, if the ledger knows it."""
        return await self.repository.get(CheckoutSession, checkout_stream_id(session_id))

    async def request_checkout(self, command: RequestCheckout) -> CheckoutStarted:
        """Create the session at Stripe, then record ``CheckoutRequested``.

        Nothing is recorded when Stripe fails. With an idempotency key the same
        key returns the same session, and concurrent duplicates race on the
        idempotency row: the loser answers with the winner's session.
        """
        if not MIN_CREDITS <= command.credits <= MAX_CREDITS:
            raise InvalidAmount(f"A purchase is {MIN_CREDITS} to {MAX_CREDITS} credits.")
        scope = f"purchase/{command.account_id}"
        fingerprint = request_fingerprint({"credits": command.credits})
        if command.idempotency_key is not None:
            earlier = await self.idempotency.find(scope, command.idempotency_key)
            if earlier is not None:
                return replay(earlier, fingerprint, CheckoutStarted)
        if not await self.repository.exists(account_stream_id(command.account_id)):
            raise AccountNotFound(command.account_id)

        # Whole minutes make concurrent duplicates send Stripe identical
        # parameters, so Stripe's idempotency returns one session to both.
        expires = self.clock().replace(second=0, microsecond=0) + CHECKOUT_LIFETIME
        expires_at = int(expires.timestamp())
        request_key = command.idempotency_key or uuid.uuid4().hex
        purchase_ref = hashlib.sha256(f"{command.account_id}\0{request_key}".encode()).hexdigest()
        created = await self.gateway.create_checkout(
            CheckoutRequest(
                account_id=command.account_id,
                credits=command.credits,
                unit_amount=self.pricing.unit_amount,
                currency=self.pricing.currency,
                success_url=self.links.success_url,
                cancel_url=self.links.cancel_url,
                expires_at=expires_at,
                idempotency_key=f"ledger-purchase-{purchase_ref[:40]}-{expires_at}",
            )
        )
        session = CheckoutSession(
            session_id=created.session_id,
            account_id=command.account_id,
            credits=command.credits,
            amount=created.amount_total,
            currency=created.currency,
            checkout_url=created.url,
            expires_at=created.expires_at,
        )
        answer = CheckoutStarted(checkout_url=created.url, session_id=created.session_id)
        try:
            async with self.store.transaction() as connection:
                await self.repository.save(session, connection=connection)
                if command.idempotency_key is not None:
                    await self.idempotency.record(
                        connection,
                        scope,
                        command.idempotency_key,
                        StoredAnswer(fingerprint, msgspec.json.encode(answer)),
                    )
        except (ConcurrencyConflict, IdempotencyKeyTaken):
            if command.idempotency_key is None:
                raise
            earlier = await self.idempotency.find(scope, command.idempotency_key)
            if earlier is None:
                raise
            return replay(earlier, fingerprint, CheckoutStarted)
        return answer

"""The ledger as its callers see it: commands in, answers out, and the reads of the write side.

``Ledger.execute(command)`` is the one entry for every write: it stamps the
command's time and hands it to the unit of work with the command's handler
(ledger/handlers/). A purchase first asks the payment provider for a Checkout
session (``request_checkout``), then records it as a command like any other.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from time import monotonic
from typing import Any, TypeVar

import msgspec

from ledger.clock_guard import ClockGuard
from ledger.commands import ApplyPaymentEvent, RecordCheckout
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.errors import AccountNotFound, HoldNotFound, InvalidAmount
from ledger.domain.events import AccountOpened, topics_of
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.domain.limits import MAX_CREDITS, MIN_CREDITS
from ledger.handlers import HANDLERS
from ledger.handlers.expiries import expire_due, expired_holds
from ledger.handlers.holds import Hold, hold_answer
from ledger.handlers.payments import Received
from ledger.handlers.purchases import CheckoutStarted, purchase_claim
from ledger.payment_events import PaymentEvent
from ledger.ports import (
    CheckoutKeyUsed,
    CheckoutMispriced,
    CheckoutRequest,
    Clock,
    CreatedCheckout,
    PaymentGateway,
    PaymentGatewayError,
    system_clock,
)
from ledger.store.claims import Claims, IdempotencyKeyReused, replay
from ledger.store.event_store import EventStore
from ledger.store.repository import Repository
from ledger.unit_of_work import UnitOfWork, mark_replayed

T = TypeVar("T")

log = logging.getLogger(__name__)

CHECKOUT_LIFETIME = timedelta(hours=1)


class Pricing(msgspec.Struct, frozen=True):
    """The price of one credit, in the currency's minor unit."""

    unit_amount: int
    currency: str


class CheckoutLinks(msgspec.Struct, frozen=True):
    """Where Stripe sends the customer back to."""

    success_url: str
    cancel_url: str
    success_token: Callable[[str, int], str] | None = None
    """Made from the account id and the session's ``expires_at``: a token the success
    link carries as ``t``, so that only the paying customer's page shows the purchase."""

    def success_url_for(self, account_id: str, expires_at: int) -> str:
        """The success link of one purchase (the same for the same account and expiry)."""
        if self.success_token is None:
            return self.success_url
        separator = "&" if "?" in self.success_url else "?"
        return f"{self.success_url}{separator}t={self.success_token(account_id, expires_at)}"


KEY_LOOKBACK_MINUTES = 30
"""How far back a purchase's Stripe key is looked for a session made under it: a session
found so can still be paid for the half hour Stripe asks of a new one (its minimum)."""


def stripe_key(request: CheckoutRequest, request_key: str) -> str:
    """Stripe's idempotency key for ``request`` under the caller's key: of everything sent
    but the session's expiry (and the success link's token, made of it), which the minute
    a request comes in sets (``Ledger.request_checkout``).

    Under one Stripe key, Stripe refuses other parameters: a request racing the first with
    other credits was answered 502 instead of 422, and a retry after a lost answer that
    reached a replica at another price (or with other links) was 502. Such a request gets
    a session of its own, never shown if the caller's key is recorded already: the
    recorded key answers (or refuses) it.
    """
    sent = msgspec.json.encode([request, request_key])
    return f"ledger-purchase-{hashlib.sha256(sent).hexdigest()[:40]}"


def _priced_as_asked(asked: CheckoutRequest, created: CreatedCheckout) -> bool:
    """Whether Stripe made the session for what the credits cost, in the ledger's currency."""
    return (
        created.amount_total == asked.credits * asked.unit_amount
        and created.currency == asked.currency
    )


class RequestCheckout(msgspec.Struct, frozen=True, kw_only=True):
    """Start buying ``credits`` for ``account_id`` (with an optional Idempotency-Key)."""

    account_id: str
    credits: int
    idempotency_key: str | None = None


class Ledger:
    """Runs commands through the unit of work and reads the write side."""

    def __init__(
        self,
        uow: UnitOfWork,
        gateway: PaymentGateway,
        pricing: Pricing,
        links: CheckoutLinks,
        clock: Clock = system_clock,
        reads: tuple[Repository, Claims] | None = None,
        clock_guard: ClockGuard | None = None,
    ) -> None:
        self.uow = uow
        self.repository: Repository = uow.repository
        self.store: EventStore = uow.repository.store
        self.claims: Claims = uow.claims
        self.reads, self.read_claims = reads or (self.repository, self.claims)
        """What the reads of the write side that no command makes (below) read through:
        in the API, the reads' share of its pool (ledger/store/read_connections.py), so that
        reads that wait long (behind a lock, through a long replay) or come in floods never
        hold the connections the commands need. Commands read through ``uow``."""
        self.gateway = gateway
        self.pricing = pricing
        self.links = links
        self.clock = clock
        self.clock_guard = clock_guard or ClockGuard(clock)
        """While it finds ``clock`` too far from the database's, every command is refused
        (``ClockSkewed``, nothing recorded): ledger/clock_guard.py."""

    def execute(self, command: Any) -> Awaitable[Any]:
        """Decide and commit one command (see ledger/unit_of_work.py); its answer, awaited.
        Refused with ``ClockSkewed`` while this process's clock is too far from the
        database's (``clock_guard``), measured again first if the clock stepped since.

        Not a coroutine of its own while the clock is steady: it hands back the unit of
        work's (a coroutine fewer a command)."""
        guard = self.clock_guard
        if guard.steady_from < guard.seconds() - monotonic() < guard.steady_to:
            return self._run(command)
        return self._run_vouched(command)  # stepped or skewed: ledger/clock_guard.py

    async def _run_vouched(self, command: Any) -> Any:
        await self.clock_guard.vouch(self.store.pool)
        return await self._run(command)

    def _run(self, command: Any) -> Awaitable[Any]:
        """The command stamped with the time now (unless it has its own), through the unit of
        work."""
        if getattr(command, "at", False) is None:
            command = msgspec.structs.replace(command, at=self.clock())
        return self.uow.run(HANDLERS[type(command)], command)

    async def apply_payment_event(
        self, event_id: str, event_type: str, meaning: PaymentEvent | None
    ) -> bool:
        """Apply a verified Stripe event once; False for a repeat."""
        received: Received = await self.execute(
            ApplyPaymentEvent(
                event_id=event_id,
                event_type=event_type,
                meaning=meaning,
                unit_amount=self.pricing.unit_amount,
                currency=self.pricing.currency,
            )
        )
        return received.applied

    async def request_checkout(self, command: RequestCheckout) -> CheckoutStarted:
        """Create the session at Stripe, then record ``CheckoutRequested``.

        Nothing is recorded when Stripe fails. With an idempotency key the same
        key returns the same session without asking Stripe again; concurrent
        duplicates get one session from Stripe (same parameters, same Stripe
        idempotency key) and one of them records it; one asking for other credits under
        the same key is refused as a reused key, as it is once the key is recorded. A
        session Stripe made for another amount or currency is expired and answered
        ``CheckoutMispriced`` (nothing recorded); a retry under the same key is asked of
        Stripe anew (``_after_mispriced``), never answered that session again. A session
        made for a request that another under the same key beat to the record (refused
        for other credits, or answered the other's session) is expired at Stripe.
        """
        if not MIN_CREDITS <= command.credits <= MAX_CREDITS:
            raise InvalidAmount(f"A purchase is {MIN_CREDITS} to {MAX_CREDITS} credits.")
        # Before Stripe: its record would be refused after (ledger/clock_guard.py).
        await self.clock_guard.vouch(self.store.pool)
        record = RecordCheckout(
            account_id=command.account_id,
            credits=command.credits,
            idempotency_key=command.idempotency_key,
            session_id="",
            checkout_url="",
            amount=0,
            currency="",
            expires_at=0,
        )
        claim = purchase_claim(record)
        if claim is not None and (earlier := await self.claims.find(claim.scope, claim.key)):
            await self.uow.note_head()
            started = replay(earlier, claim.fingerprint, CheckoutStarted)
            mark_replayed()
            return started
        if not await self.repository.exists(account_stream_id(command.account_id)):
            raise AccountNotFound(command.account_id)
        timeless = CheckoutRequest(
            account_id=command.account_id,
            credits=command.credits,
            unit_amount=self.pricing.unit_amount,
            currency=self.pricing.currency,
            success_url=self.links.success_url_for(command.account_id, 0),
            cancel_url=self.links.cancel_url,
            expires_at=0,
            idempotency_key="",
        )
        key = stripe_key(timeless, command.idempotency_key or uuid.uuid4().hex)
        created = await self._create_session(timeless, key)
        if created.replayed and not _priced_as_asked(timeless, created):
            created = await self._after_mispriced(timeless, key, created)
        await self._check_price(timeless, created)
        try:
            answer: CheckoutStarted = await self.execute(
                msgspec.structs.replace(
                    record,
                    session_id=created.session_id,
                    checkout_url=created.url,
                    amount=created.amount_total,
                    currency=created.currency,
                    expires_at=created.expires_at,
                )
            )
        except IdempotencyKeyReused:
            await self._expire_unanswered(created, "for other credits than its key's purchase")
            raise
        if answer.session_id != created.session_id:
            await self._expire_unanswered(created, f"its key answers {answer.session_id}")
        return answer

    async def _expire_unanswered(self, created: CreatedCheckout, why: str) -> None:
        """Expire at Stripe a session this request made and lost to a concurrent one under
        the same Idempotency-Key (whose claim the other recorded first): never recorded,
        never answered, and made under a Stripe key only this request's retries would ask
        for (each of which the recorded claim answers before Stripe), it is shown to nobody,
        yet payable at Stripe for its hour. Stripe failing to expire it leaves it so (the
        answer stands); were it paid, it would be credited as a session never recorded."""
        log.info("session %s is answered to nobody (%s): expiring it", created.session_id, why)
        try:
            await self.gateway.expire_checkout(created.session_id)
        except PaymentGatewayError as error:
            log.warning(
                "session %s, answered to nobody, could not be expired at Stripe: %s",
                created.session_id,
                error,
            )

    async def _create_session(self, timeless: CheckoutRequest, key: str) -> CreatedCheckout:
        """The session Stripe made under ``key``, or a new one expiring an hour from this
        minute: whole minutes make concurrent duplicates send Stripe identical parameters.

        A retry whose first attempt made a session and lost the answer (Stripe's, or ours
        with the process that got it) comes in a later minute: Stripe refuses its expiry
        under the key, and the expiries of the minutes before are asked in turn until
        Stripe answers the session made. Should none be found, or the key answer a failure
        Stripe saved under it, the session is made under a key of this minute's own.
        """
        minute = self.clock().replace(second=0, microsecond=0)
        for back in range(KEY_LOOKBACK_MINUTES + 1):
            expires_at = int((minute - timedelta(minutes=back) + CHECKOUT_LIFETIME).timestamp())
            try:
                return await self.gateway.create_checkout(self._at(timeless, expires_at, key))
            except CheckoutKeyUsed as used:
                if not used.other_parameters:
                    break
        expires_at = int((minute + CHECKOUT_LIFETIME).timestamp())
        return await self.gateway.create_checkout(
            self._at(timeless, expires_at, f"{key}-{expires_at}")
        )

    async def _after_mispriced(
        self, timeless: CheckoutRequest, key: str, earlier: CreatedCheckout
    ) -> CreatedCheckout:
        """A new session for a retry whose key's session was refused for its price.

        A request that answered ``CheckoutMispriced`` (502) recorded nothing, so its retry
        under the same Idempotency-Key is a fresh attempt, as after every other 502. Stripe
        answers the key's first session to every retry (same key, same parameters), so the
        retry asks under a key of its own: one per attempt, since each later retry must be
        asked anew too (a deterministic key would give the next one this attempt's session,
        mispriced or not). Concurrent retries each get a session; one is recorded and
        answers them all (the caller's key), the others are shown to nobody and expired at
        Stripe (``request_checkout``).
        """
        log.info(
            "session %s made under this purchase's Stripe key is for %s %s, refused before: "
            "not answered again, asking Stripe for a new one (account %s)",
            earlier.session_id,
            earlier.amount_total,
            earlier.currency,
            timeless.account_id,
        )
        try:  # its request expired it, unless that request ended first
            await self.gateway.expire_checkout(earlier.session_id)
        except PaymentGatewayError as error:
            log.info("session %s not expired again: %s", earlier.session_id, error)
        minute = self.clock().replace(second=0, microsecond=0)
        expires_at = int((minute + CHECKOUT_LIFETIME).timestamp())
        return await self.gateway.create_checkout(
            self._at(timeless, expires_at, f"{key}-{uuid.uuid4().hex}")
        )

    async def _check_price(self, asked: CheckoutRequest, created: CreatedCheckout) -> None:
        """Refuse a session Stripe made for another amount or currency than the credits cost
        (a coupon, a price or tax set up in Stripe's dashboard, another account): recorded,
        its payment would credit them whatever it paid. It is expired at Stripe, so that
        nobody pays it; ``CheckoutMispriced`` (502, nothing recorded)."""
        if _priced_as_asked(asked, created):
            return
        amount = asked.credits * asked.unit_amount
        log.error(
            "Stripe made session %s for %s %s, not the %s %s that %s credits cost: "
            "expired, not recorded (account %s)",
            created.session_id,
            created.amount_total,
            created.currency,
            amount,
            asked.currency,
            asked.credits,
            asked.account_id,
        )
        try:
            await self.gateway.expire_checkout(created.session_id)
        except PaymentGatewayError as error:
            log.error("session %s could not be expired at Stripe: %s", created.session_id, error)
        raise CheckoutMispriced(
            f"Stripe made the checkout for {created.amount_total} {created.currency}, "
            f"not {amount} {asked.currency}"
        )

    def _at(self, timeless: CheckoutRequest, expires_at: int, key: str) -> CheckoutRequest:
        """``timeless`` expiring at ``expires_at``, sent under ``key``."""
        return msgspec.structs.replace(
            timeless,
            success_url=self.links.success_url_for(timeless.account_id, expires_at),
            expires_at=expires_at,
            idempotency_key=key,
        )

    # --- reads of the write side ----------------------------------------------------------

    async def account(self, account_id: str, *, fresh: bool = False) -> CreditAccount:
        """The account as its events leave it (``fresh``: read from the store, not memory)."""
        account = await self.reads.get(CreditAccount, account_stream_id(account_id), fresh=fresh)
        if account is None:
            raise AccountNotFound(account_id)
        return account

    async def account_now(self, account_id: str) -> CreditAccount:
        """The account as a command decided now would find it (what a balance read shows):
        read from the store, then ``as_now``."""
        return self.as_now(await self.account(account_id, fresh=True))

    def as_now(self, account: CreditAccount) -> CreditAccount:
        """``account`` with its holds and grants past their expiry now expired, swept or not
        (on this copy, never committed: its version and times then count those expiries)."""
        expire_due(account, self.clock())
        return account

    async def account_as_of(self, account_id: str, moment: datetime) -> CreditAccount:
        """The account as its events recorded up to ``moment`` leave it: an answer that
        never changes (appends that could be recorded before ``moment`` are waited for)."""
        await self.reads.store.wait_for_appends_before(moment)
        account = await self.reads.get(CreditAccount, account_stream_id(account_id), as_of=moment)
        if account is None:
            raise AccountNotFound(account_id)
        return account

    async def account_exists(self, account_id: str) -> bool:
        """Whether the account has been opened."""
        return await self.reads.exists(account_stream_id(account_id))

    async def all_account_ids(self) -> list[str]:
        """Every opened account, oldest first (from their AccountOpened events)."""
        return await self.store.creation_field(topics_of(AccountOpened), "account_id")

    async def session(self, session_id: str, *, fresh: bool = False) -> CheckoutSession | None:
        """The Checkout session as its events leave it, if the ledger knows it
        (``fresh``: read from the store, not memory)."""
        return await self.reads.get(CheckoutSession, checkout_stream_id(session_id), fresh=fresh)

    async def hold(self, account_id: str, hold_id: str) -> Hold:
        """The hold as it stands: open, or the answer that settled it."""
        account = await self.account(account_id, fresh=True)
        if (open_hold := account.holds.get(hold_id)) is not None:
            # Past its expiry, it is no longer open, swept or not: shown as its expiry
            # will be recorded (decided on this copy, never committed), and the balances
            # with every expiry due now, as a balance read shows them.
            expired = expired_holds(account, self.clock())
            return expired.get(hold_id) or hold_answer(account, hold_id, open_hold, "held")
        earlier = await self.read_claims.find(f"hold-settlement/{account_id}", hold_id)
        if earlier is None:
            raise HoldNotFound(hold_id)
        return msgspec.json.decode(earlier.response, type=Hold)

"""A deterministic simulation of the ledger, in the spirit of TigerBeetle's VOPR.

A seeded ``random.Random`` writes the schedule. Two ledger instances (two API
processes' worth: caches, group committers and locks of their own) share one
store and take commands in turn; Checkout sessions are created through the real
Stripe SDK against the stand-in (which fails some calls); Stripe's events are
delivered duplicated and in any order, to either instance (a refund or a dispute
before its payment, an ``expired`` after it); spends, holds, resets and plan
changes come with idempotency keys and are repeated; answers are lost mid-commit
and retried; the projector is cut off mid-batch, the live one (which remembers its
views' rows) taking turns with others; months turn.

After every step the accounts it touched, replayed from the store, must equal a
plain model of the README's rules (``model.py``, no code shared with the ledger);
every few steps the views, caught up, must equal the replay (for the accounts touched
since and a few others in turn; at the end for every account); at the end every
session is credited once or not at all and ``ledger audit verify`` finds nothing.
A violation names its seed and step.
"""

from __future__ import annotations

import asyncio
import copy
import random
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import msgspec

from api.routes.holds import place
from api.schemas import PlaceHoldRequest
from api.services import Services
from audit.verify import verify
from ledger.adapters.stripe_gateway import StripeGateway
from ledger.bootstrap import build_ledger
from ledger.commands import (
    ChangeAllowance,
    ExpireGrant,
    GrantCredits,
    OpenAccount,
    PlaceHold,
    ResetMonth,
    SetLowBalanceThreshold,
    SettleHold,
    SpendCredits,
    VoidGrant,
)
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.errors import (
    CaptureExceedsHold,
    GrantClosed,
    GrantNotDue,
    HoldAlreadySettled,
    HoldHasExpired,
    HoldNotDue,
    InsufficientCredits,
    PeriodOutOfOrder,
)
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.handlers.hold_answers import Hold
from ledger.handlers.purchases import CheckoutStarted
from ledger.notifications.endpoints import EndpointRegistry
from ledger.payment_events import (
    CheckoutChange,
    CheckoutEvent,
    DisputeEvent,
    PaymentEvent,
    RefundEvent,
    RefundUpdate,
)
from ledger.ports import PaymentGatewayError
from ledger.service import CheckoutLinks, Ledger, Pricing, RequestCheckout
from ledger.store.claims import IdempotencyKeyReused
from ledger.store.event_store import EventStore
from ledger.store.repository import Repository
from projections.runner import all_projections, apply_batch, catch_up
from stripe_standin import RunningStandin
from tests.integration.test_projections import assert_views_match_the_events
from tests.simulation import model
from tests.support.events import events_since, settled, stream_events, views_past
from tests.support.times import UNJUDGED

VIEW_CHECK_EVERY = 20
VIEWED_IN_TURN = 5
"""Accounts untouched since the last view check that the next one compares as well."""
HOLD_SECONDS = 3600 * 24 * 3
"""What the default schedule's holds are placed for."""
MAX_HOLD_SECONDS = 7 * 24 * 3600
"""The longest hold the API takes (api/schemas.py)."""
STRIPE_TIMEOUT = 1.0
"""Seconds the simulation's gateway waits for the stand-in (a hang fault waits twice that)."""

UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What a command meets while PostgreSQL restarts: a client answered 503 retries."""


class Violation(AssertionError):
    """The ledger disagreed with the model or broke an invariant."""


class _RouteServices:
    """What the API's hold route reads of its ``Services``: the ledger (one instance)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger


class World:
    """One seed's simulation: two ledger instances on one store, the stand-in, a model."""

    def __init__(
        self,
        seed: int,
        pool: Any,
        standin: RunningStandin,
        restart_database: Callable[[], Awaitable[None]] | None = None,
        mix: dict[str, float] | None = None,
    ) -> None:
        self.seed = seed
        self.restart_database = restart_database
        self.random = random.Random(seed)
        self.pool = pool
        self.store = EventStore(pool)
        self.standin = standin
        self.now = datetime(2030, 1, 10, tzinfo=UTC)
        standin.state.clock = lambda: self.now.timestamp()
        # Prices other than a cent a credit exercise the rounding of refunds.
        self.unit = self.random.choice([1, 3, 7])
        # One attempt per call: a hanging Stripe costs the schedule STRIPE_TIMEOUT, not the
        # SDK's retries and back-off (its retries are tested in tests/faults/test_stripe_faults.py).
        # At 0.3 s an answered call on a busy CI machine timed out now and then.
        self.gateway = StripeGateway(
            "sk_test_simulation",
            api_base=standin.base_url,
            timeout=STRIPE_TIMEOUT,
            max_network_retries=0,
        )
        self.instances = [self._instance() for _ in range(2)]
        # The live projector (``ledger project``'s: its views' rows remembered between
        # batches, where it left them known) takes turns with projectors that remember
        # nothing, as with a second process or a rebuild: its memory must notice them.
        # Its turns are drawn apart, so that every seed's schedule stays as it was.
        self.live = all_projections(remembering=True)
        self.live_left_at: dict[str, tuple[int, int]] = {}
        self.projector_turns = random.Random(f"{seed} projector")
        self.accounts: dict[str, model.Account] = {}
        self.sessions: dict[str, model.Session] = {}
        self.network: list[tuple[str, PaymentEvent]] = []
        self.seen_event_ids: set[str] = set()
        self.awaiting_money: set[str] = set()
        """Payment intents of sessions completed unpaid whose money has not come yet."""
        self.answers: dict[str, Any] = {}  # idempotency key -> first answer
        self.spends: dict[str, tuple[str, int]] = {}  # key -> (account, amount)
        self.placed: dict[str, tuple[str, Any]] = {}  # key -> (account, hold answer)
        self.granted: dict[str, tuple[str, Any]] = {}  # key -> (account, grant answer)
        self.held_for: dict[str, int] = {}  # hold key -> the seconds it was placed for
        self.resets: Counter[str] = Counter()  # account -> the resets it took
        self.resets_before: dict[str, int] = {}  # hold id -> its account's resets when placed
        self.touched: set[str] = set()
        self.sessions_touched: set[str] = set()
        self.touched_since_views: set[str] = set()
        self.viewed_in_turn = 0
        self.mix = mix or {}
        self.counts: Counter[str] = Counter()
        self.ids = 0

    def _instance(self) -> Ledger:
        return build_ledger(
            self.pool,
            gateway=self.gateway,
            pricing=Pricing(unit_amount=self.unit, currency="usd"),
            links=CheckoutLinks(
                success_url="http://127.0.0.1/ok", cancel_url="http://127.0.0.1/no"
            ),
            clock=lambda: self.now,
        )

    @property
    def ledger(self) -> Ledger:
        """Either instance: commands for one account land on both, as behind a balancer."""
        return self.random.choice(self.instances)

    def new_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}_sim{self.seed}_{self.ids}"

    async def close(self) -> None:
        for instance in self.instances:
            await instance.uow.committer.stop()
        await self.gateway.close()

    # --- faults ----------------------------------------------------------------------------

    async def answered(self, command: Any) -> Any:
        """Run a command as a client whose connection may drop: an answer lost mid-commit is
        asked for again with the same key; the first answer must come back, and only once."""
        if not isinstance(command, OpenAccount) and self.random.random() < 0.1:
            attempt = asyncio.ensure_future(self.ledger.execute(command))
            await asyncio.sleep(self.random.choice([0, 0.0005, 0.002]))
            if not attempt.done():
                attempt.cancel()
                self.counts["answers lost mid-commit"] += 1
            try:
                await attempt
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: S110 - the retry below gets the real outcome
                pass
        for attempt in range(50):
            try:
                return await self.ledger.execute(command)
            except UNAVAILABLE:
                # The database is away (restarting): the client retries with the same key.
                self.counts["retries while the database was away"] += 1
                await asyncio.sleep(0.05 * min(attempt + 1, 10))
        return await self.ledger.execute(command)

    async def project_with_a_kill(self) -> None:
        """A projector applies a few batches and is cut off in the middle of one."""
        for _ in range(self.random.randint(0, 3)):
            await self.project(self.random.randint(1, 40))
        cut = asyncio.ensure_future(self.project(self.random.randint(1, 40)))
        await asyncio.sleep(self.random.choice([0, 0.001, 0.005]))
        cut.cancel()
        try:
            await cut
        except asyncio.CancelledError:
            self.counts["projector cut off mid-batch"] += 1

    async def project(self, batch_size: int) -> None:
        """One batch of a projector that remembers nothing, or the live one's catch-up."""
        if self.projector_turns.random() < 0.5:
            await apply_batch(self.store, all_projections(), batch_size=batch_size)
        else:
            await catch_up(self.store, self.live, batch_size, self.live_left_at)

    # --- steps -----------------------------------------------------------------------------

    async def open_account(self) -> str:
        account_id = self.new_id("acct")
        allowance = self.random.choice([0, 100, 1000, 5000])
        await self.answered(OpenAccount(account_id=account_id, monthly_allowance=allowance))
        self.accounts[account_id] = model.Account(
            allowance, allowance, allowance, period=self.now.strftime("%Y-%m")
        )
        self.touched.add(account_id)
        return account_id

    async def purchase(self, account_id: str) -> None:
        credits = self.random.choice([100, 250, 1000, 3333])
        failing = self.random.random() < 0.15
        if failing:
            mode = self.random.choice(["error", "hang"])
            self.standin.state.fail_status, self.standin.state.fail_count = 500, 1
            self.standin.state.fail_mode, self.standin.state.fail_seconds = mode, 2 * STRIPE_TIMEOUT
        try:
            started = await self.ledger.request_checkout(
                RequestCheckout(account_id=account_id, credits=credits)
            )
        except PaymentGatewayError:
            if not failing:
                raise Violation("a purchase failed without a Stripe fault") from None
            self.counts["purchases refused while Stripe failed"] += 1
            return
        finally:
            self.standin.state.fail_count = 0
        self.pay_or_not(account_id, credits, started.session_id)

    def pay_or_not(self, account_id: str, credits: int, session_id: str) -> None:
        """A session Stripe made for the ledger: Stripe's events about it, on the network."""
        session = self.standin.state.sessions[session_id]
        intent = self.new_id("pi")
        self.sessions[session_id] = model.Session(account_id, credits, credits * self.unit, intent)
        self.counts["purchases"] += 1
        assert session is not None
        outcome = self.random.random()
        if outcome < 0.7:
            if self.random.random() < 0.3:
                # A delayed method (a bank transfer): completed unpaid first, the money
                # later; refunds and disputes can reach the ledger between the two.
                self.send(
                    "checkout.session.completed",
                    self.checkout_event(session_id, CheckoutChange.COMPLETED, paid=False),
                )
                self.counts["delayed payments"] += 1
                if self.random.random() < 0.25:
                    failed = CheckoutChange.PAYMENT_FAILED
                    self.send(
                        "checkout.session.async_payment_failed",
                        self.checkout_event(session_id, failed, paid=False),
                    )
                    return
                change = CheckoutChange.PAYMENT_SUCCEEDED
            else:
                change = self.random.choice(
                    [CheckoutChange.COMPLETED, CheckoutChange.PAYMENT_SUCCEEDED]
                )
            event = self.checkout_event(session_id, change)
            if self.random.random() < 0.03:  # paid, but not what the session asked for
                event = msgspec.structs.replace(event, amount_total=event.amount_total + 1)
                self.counts["payments of another amount"] += 1
            self.send(f"checkout.session.{change}", event)
        if outcome > 0.55:
            self.send(
                "checkout.session.expired",
                self.checkout_event(session_id, CheckoutChange.EXPIRED),
            )

    async def purchase_with_a_key(self, account_id: str) -> None:
        """A purchase with an ``Idempotency-Key``, asked again as customers do (a double click
        on both instances at once, a retry after a lost answer, or after Stripe failed: an
        error, a hang, or an answer dropped after Stripe made the session): every answer is
        the first one's session, and the ledger records it once (checked at the end)."""
        key = self.new_id("buy-key")
        credits = self.random.choice([100, 250, 1000, 3333])
        command = RequestCheckout(account_id=account_id, credits=credits, idempotency_key=key)
        answers: list[Any] = []
        if self.random.random() < 0.3:
            mode = self.random.choice(["error", "hang", "drop"])
            self.standin.state.fail_status, self.standin.state.fail_count = 500, 1
            self.standin.state.fail_mode, self.standin.state.fail_seconds = mode, 2 * STRIPE_TIMEOUT
            try:
                answers.append(await self.ledger.request_checkout(command))
            except PaymentGatewayError:
                self.counts[f"keyed purchases failed at Stripe ({mode}), then retried"] += 1
            finally:
                self.standin.state.fail_count = 0
        if self.random.random() < 0.4:  # a double click, each to either instance
            twice = await asyncio.gather(
                *(self.random.choice(self.instances).request_checkout(command) for _ in "ab")
            )
            answers += twice
            self.counts["keyed purchases asked twice at once"] += 1
        for _ in range(self.random.randint(1, 2)):
            answers.append(await self.ledger.request_checkout(command))
        if any(answer != answers[0] for answer in answers):
            raise Violation(f"a purchase key was answered {set(answers)}")
        self.counts["keyed purchases"] += 1
        self.pay_or_not(account_id, credits, answers[0].session_id)

    async def purchase_key_reused(self, account_id: str) -> None:
        """A purchase's Idempotency-Key reused for other credits: "the same key returns the
        same session", and another request under it is refused (422, IdempotencyKeyReused).
        After the first is answered, Stripe is not asked again; sent at once, on both
        instances, both ask Stripe before either records: one is recorded and answered, the
        other refused. Either way the key answers its one session after, and refuses the
        other credits; a session Stripe made for the refused request, shown to nobody, is
        expired at Stripe, not left payable for its hour."""
        key = self.new_id("buy-key")
        credits, other = self.random.sample([100, 250, 1000, 3333], 2)
        first = RequestCheckout(account_id=account_id, credits=credits, idempotency_key=key)
        second = msgspec.structs.replace(first, credits=other)
        made_before = set(self.standin.state.sessions)
        outcomes: list[Any]
        if self.random.random() < 0.5:
            outcomes = await asyncio.gather(
                *(self.random.choice(self.instances).request_checkout(c) for c in (first, second)),
                return_exceptions=True,
            )
            when = "at once"
        else:
            outcomes = [await self.ledger.request_checkout(first)]
            try:
                outcomes.append(await self.ledger.request_checkout(second))
            except IdempotencyKeyReused as refused:
                outcomes.append(refused)
            when = "after the first answer"
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, IdempotencyKeyReused):
                raise Violation(f"a purchase under a reused key failed: {outcome!r}") from outcome
        taken = [
            (command, outcome)
            for command, outcome in zip((first, second), outcomes, strict=True)
            if isinstance(outcome, CheckoutStarted)
        ]
        if len(taken) != 1:
            raise Violation(f"a key sent for {credits} and {other} credits answered {outcomes}")
        [(command, started)] = taken
        refused_command = second if command is first else first
        if await self.ledger.request_checkout(command) != started:
            raise Violation("a purchase key answered another session after a reuse")
        try:
            await self.ledger.request_checkout(refused_command)
        except IdempotencyKeyReused:
            pass
        else:
            raise Violation("a purchase key reused for other credits was answered, not refused")
        made = set(self.standin.state.sessions) - made_before
        if started.session_id not in made:
            raise Violation(f"a purchase answered {started.session_id}, not made now")
        payable = sorted(
            session_id
            for session_id in made - {started.session_id}
            if self.standin.state.sessions[session_id].data["status"] == "open"
        )
        if payable:
            raise Violation(
                f"sessions made for a refused purchase left payable at Stripe: {payable}"
            )
        self.counts[f"purchase keys reused for other credits {when}"] += 1
        self.counts["sessions of refused purchases expired at Stripe"] += len(made) - 1
        self.pay_or_not(account_id, command.credits, started.session_id)

    def checkout_event(
        self, session_id: str, change: CheckoutChange, *, paid: bool | None = None
    ) -> CheckoutEvent:
        session = self.sessions[session_id]
        return CheckoutEvent(
            event_id=self.new_id("evt"),
            change=change,
            session_id=session_id,
            paid=change is not CheckoutChange.EXPIRED if paid is None else paid,
            payment_intent=session.payment_intent,
            amount_total=session.amount,
            currency="usd",
            account_id=session.account_id,
            credits=session.credits,
            checkout_url=None,
            expires_at=None,
        )

    def send(self, event_type: str, event: PaymentEvent) -> None:
        for _ in range(self.random.choice([1, 1, 1, 2, 3])):  # Stripe delivers at least once
            self.network.append((event_type, event))

    def refund(self, session_id: str) -> None:
        """A refund of some of what is left: ``charge.refunded`` with the charge's cumulative
        ``amount_refunded``, then ``refund.created`` with the refund itself, as Stripe sends
        them since API version 2024-10-28 (docs/stripe-standin.md). Nothing left, Stripe
        refuses it."""
        session = self.sessions[session_id]
        cumulative = min(
            session.amount, session.refund_sent + self.random.randint(1, session.amount)
        )
        amount = cumulative - session.refund_sent
        if not amount:
            self.counts["refunds refused: all refunded"] += 1
            return
        if session.refund_sent < sum(session.refunds_made.values()):
            self.counts["refunds after one failed"] += 1
        session.refund_sent = cumulative
        refund_id = self.new_id("re")
        session.refunds_made[refund_id] = amount
        session.live_refunds[refund_id] = amount
        self.send(
            "charge.refunded",
            RefundEvent(
                event_id=self.new_id("evt"),
                payment_intent=session.payment_intent,
                amount_refunded=cumulative,
            ),
        )
        self.send("refund.created", self.refund_update(session, refund_id, amount, "succeeded"))
        self.counts["refunds"] += 1

    def fail_refund(self) -> None:
        """A refund made earlier fails (the customer's bank returns it): the charge's
        ``amount_refunded`` drops by its amount and Stripe sends ``charge.refund.updated``,
        ``refund.updated`` and ``refund.failed``, never ``charge.refunded``; the money is
        refundable again."""
        refunded = [s for s in sorted(self.sessions) if self.sessions[s].live_refunds]
        if not refunded:
            return
        # Mostly of a paid purchase (whose clawback it gives back), as the other steps pick.
        paid = [s for s in refunded if self.sessions[s].status == "paid"]
        chosen = paid if paid and self.random.random() < 0.7 else refunded
        session = self.sessions[self.random.choice(chosen)]
        refund_id = self.random.choice(sorted(session.live_refunds))
        amount = session.live_refunds.pop(refund_id)
        session.refund_sent -= amount
        for event_type in ("charge.refund.updated", "refund.updated", "refund.failed"):
            self.send(event_type, self.refund_update(session, refund_id, amount, "failed"))
        self.counts["refunds failed"] += 1

    def refund_update(
        self, session: model.Session, refund_id: str, amount: int, status: str
    ) -> RefundUpdate:
        return RefundUpdate(
            event_id=self.new_id("evt"),
            refund_id=refund_id,
            payment_intent=session.payment_intent,
            amount=amount,
            status=status,
        )

    def dispute(self, session_id: str) -> None:
        session = self.sessions[session_id]
        dispute_id = self.new_id("dp")
        amount = session.amount - session.refund_sent
        for status in self.random.choice(model.DISPUTE_LIVES):
            self.send(
                "charge.dispute.updated",
                DisputeEvent(
                    event_id=self.new_id("evt"),
                    dispute_id=dispute_id,
                    payment_intent=session.payment_intent,
                    status=status,
                    amount=amount,
                ),
            )
        self.counts["disputes"] += 1

    async def deliver(self) -> None:
        """Deliver one event from the network, picked at random: reordering for free."""
        event_type, event = self.network.pop(self.random.randrange(len(self.network)))
        await self.ledger.apply_payment_event(event.event_id, event_type, event)
        if event.event_id in self.seen_event_ids:
            self.counts["duplicate deliveries"] += 1
            return
        self.seen_event_ids.add(event.event_id)
        if isinstance(event, RefundEvent | RefundUpdate | DisputeEvent) and (
            event.payment_intent in self.awaiting_money
        ):
            self.counts["refunds or disputes between completed and paid"] += 1
        session_id = (
            event.session_id
            if isinstance(event, CheckoutEvent)
            else self.session_id_of(event.payment_intent)
        )
        session = self.sessions[session_id]
        match event:
            case CheckoutEvent(change=CheckoutChange.EXPIRED):
                pass
            case CheckoutEvent(change=CheckoutChange.PAYMENT_FAILED):
                self.awaiting_money.discard(session.payment_intent)
            case CheckoutEvent(paid=False):  # completed, money not there yet
                self.counts["unpaid completions delivered"] += 1
                if session.status != "paid":
                    self.awaiting_money.add(session.payment_intent)
            case CheckoutEvent() if event.amount_total == session.amount:
                self.awaiting_money.discard(session.payment_intent)
            case RefundEvent():
                self.counts["refunds delivered"] += 1
            case RefundUpdate(status="failed"):
                self.counts["refund failures delivered"] += 1
            case RefundUpdate():
                self.counts["refunds by id delivered"] += 1
            case DisputeEvent():
                self.counts["dispute events delivered"] += 1
        self.touched.add(session.account_id)
        self.sessions_touched.add(session_id)
        credited, taken_back = credits_moved(session, event)
        if not credited and taken_back is None:
            return
        self.expiries_first(session.account_id)
        account = self.accounts[session.account_id]
        if credited:
            account.credit(credited)
        if taken_back is not None:
            if taken_back[0] < 0:
                self.counts["clawbacks given back by failed refunds"] += 1
            account.take_back(taken_back[0])  # as the ledger: the refund's part,
            account.take_back(taken_back[1])  # then the dispute's

    def expiries_first(self, account_id: str) -> None:
        """A payment that moves an account's credits records the expiries due first, as
        every command that moves them ("a balance read counts no hold or grant past its
        expiry": nor does what the payment notifies). Once a command: the next call finds
        none due."""
        self.keep_due_expired(account_id, self.with_due_expired(account_id))

    def session_id_of(self, payment_intent: str) -> str:
        return next(s for s, m in self.sessions.items() if m.payment_intent == payment_intent)

    async def spend(self, account_id: str) -> None:
        account = self.accounts[account_id]
        mine = [key for key, (acct, _) in self.spends.items() if acct == account_id]
        if mine and self.random.random() < 0.25:  # a client retrying a spend it made
            key = self.random.choice(mine)
            again = await self.answered(spend_command(account_id, self.spends[key][1], key))
            if again != self.answers[key]:
                raise Violation(f"a repeated spend key got another answer: {again}")
            self.counts["repeated spends"] += 1
            return
        key = self.new_id("job")
        amount = self.random.choice([1, 7, 50, 120, 400, 999, 2500])
        account = self.with_due_expired(account_id)
        try:
            answer = await self.answered(spend_command(account_id, amount, key))
        except InsufficientCredits:
            if amount <= account.available_at(self.now):
                raise Violation(
                    f"refused {amount} with {account.available_at(self.now)} available"
                ) from None
            self.counts["spends refused"] += 1
            return
        if amount > account.available_at(self.now):
            raise Violation(f"spent {amount} with only {account.available_at(self.now)} available")
        self.keep_due_expired(account_id, account)
        split = account.spend(amount, self.now)
        if (answer.from_allowance, answer.from_grants, answer.from_topup) != split:
            raise Violation(
                f"spend split {answer.from_allowance, answer.from_grants, answer.from_topup}, "
                f"the rules say {split}"
            )
        if split[1]:
            self.counts["spends from grants"] += 1
        self.answers[key] = answer
        self.spends[key] = (account_id, amount)
        self.touched.add(account_id)
        self.counts["spends"] += 1

    async def burst(self, account_id: str) -> None:
        """Concurrent writers: a few spends on one account at once, on both instances. Those
        taken, in the order the store committed them, must each be what the rules take then;
        each refused one must be short even of what they all left."""
        amounts = [self.random.choice([1, 7, 50, 120, 400, 999]) for _ in range(6)]
        amounts = amounts[: self.random.randint(2, 6)]
        keys = [self.new_id("job") for _ in amounts]
        instances = [self.random.choice(self.instances) for _ in amounts]
        stream = account_stream_id(account_id)
        before = len(await stream_events(self.store, stream))
        account = self.with_due_expired(account_id)
        outcomes = await asyncio.gather(
            *(
                instance.execute(spend_command(account_id, amount, key))
                for instance, amount, key in zip(instances, amounts, keys, strict=True)
            ),
            return_exceptions=True,
        )
        taken = {k: o for k, o in zip(keys, outcomes, strict=True) if not isinstance(o, Exception)}
        for outcome in outcomes:
            if isinstance(outcome, Exception) and not isinstance(outcome, InsufficientCredits):
                raise Violation(f"a spend among concurrent ones failed: {outcome!r}")
        committed = [
            data["reason"]
            for kind, data in (await stream_events(self.store, stream))[before:]
            if kind == "CreditsSpent"
        ]
        if sorted(committed) != sorted(taken):
            raise Violation(f"concurrent spends answered {sorted(taken)}, stored {committed}")
        amount_of = dict(zip(keys, amounts, strict=True))
        for key in committed:
            if amount_of[key] > account.available_at(self.now):
                raise Violation(f"concurrent spends overdrew: {amount_of[key]} taken")
            split = account.spend(amount_of[key], self.now)
            account.watch()  # the alerts judge what each command left (the first's expiries too)
            answer = taken[key]
            if (answer.from_allowance, answer.from_grants, answer.from_topup) != split:
                raise Violation(f"a concurrent spend split {answer}, the rules say {split}")
            self.answers[key] = answer
            self.spends[key] = (account_id, amount_of[key])
        for key in set(keys) - set(taken):
            if amount_of[key] <= account.available_at(self.now):
                raise Violation(f"a concurrent spend of {amount_of[key]} refused, yet it fits")
        if taken:
            self.keep_due_expired(account_id, account)
            self.touched.add(account_id)
        self.counts["concurrent spends"] += len(amounts)
        self.counts["concurrent spends taken"] += len(taken)

    def with_due_expired(self, account_id: str) -> model.Account:
        """The account as a command that answers its balances sees it: "a hold past its
        expiry is no longer open, swept or not", and a grant past its expiry has expired,
        in the order they fell due (a copy: a refusal records nothing)."""
        account = self.accounts[account_id]
        if not due_expiries(account, self.now):
            return account
        account = copy.deepcopy(account)
        expire_due(account, self.now)
        return account

    def keep_due_expired(self, account_id: str, account: model.Account) -> None:
        """The command was taken: the expiries it recorded first stand."""
        if account is not self.accounts[account_id]:
            self.counts["expiries recorded by a command"] += 1
            self.accounts[account_id] = account

    async def place_hold(self, account_id: str, seconds: int | None = HOLD_SECONDS) -> None:
        """A hold for ``seconds`` (None: placed as the API places one that names no
        ``expires_in_seconds``, through its route: "default 900"), or a retry of one."""
        account = self.accounts[account_id]
        mine = [key for key, (acct, _) in self.placed.items() if acct == account_id]
        if mine and self.random.random() < 0.2:  # a client retrying a hold it placed
            key = self.random.choice(mine)
            first = self.placed[key][1]
            if (
                await self.answered(
                    hold_command(account_id, first.amount, first.reason, key, self.held_for[key])
                )
                != first
            ):
                raise Violation("a repeated hold key got another answer")
            self.counts["repeated holds"] += 1
            return
        key = self.new_id("hold-key")
        amount = self.random.choice([5, 60, 300, 900, 2000])
        account = self.with_due_expired(account_id)
        try:
            if seconds is None:
                answer = await self.placed_as_the_api_does(account_id, amount, key)
            else:
                answer = await self.answered(hold_command(account_id, amount, key, key, seconds))
        except InsufficientCredits:
            free = account.available_at(self.now)
            if amount <= free:
                raise Violation(f"hold of {amount} refused, {free} free") from None
            self.counts["holds refused"] += 1
            return
        if amount > account.available_at(self.now):
            raise Violation(f"held {amount} with only {account.available_at(self.now)} available")
        self.keep_due_expired(account_id, account)
        from_allowance, from_grants, _ = account.split(amount, self.now)
        account.place(
            answer.hold_id,
            model.Hold(
                amount,
                from_allowance,
                account.period,
                self.now + timedelta(seconds=seconds or model.DEFAULT_HOLD_SECONDS),
                from_grants,
            ),
        )
        expires_at = datetime.fromisoformat(answer.expires_at)
        if expires_at != account.holds[answer.hold_id].expires_at:
            raise Violation(
                f"a hold for {seconds} s expires at {answer.expires_at}, placed at {self.now}"
            )
        if (answer.held, answer.available) != (account.held, account.available):
            raise Violation(
                f"hold answered held/available {answer.held}/{answer.available}, "
                f"the rules say {account.held}/{account.available}"
            )
        self.placed[key] = (account_id, answer)
        # Its retries name the default: the same request ("default 900") as one naming none.
        self.held_for[key] = seconds or model.DEFAULT_HOLD_SECONDS
        self.resets_before[answer.hold_id] = self.resets[account_id]
        self.touched.add(account_id)
        self.counts["holds"] += 1

    async def place_hold_for_long(self, account_id: str) -> None:
        """A hold for as long as the API allows (7 days) or a moment: with resets ahead of the
        calendar, one hold's life spans two of them or more."""
        seconds = self.random.choice([1, 900, 4 * 24 * 3600, MAX_HOLD_SECONDS])
        await self.place_hold(account_id, seconds)

    async def placed_as_the_api_does(self, account_id: str, amount: int, key: str) -> Hold:
        """``POST /v1/accounts/{id}/holds`` with ``{"amount", "reason"}`` and no
        ``expires_in_seconds``: its body decoded as the API's, placed by its route."""
        body = msgspec.json.encode({"amount": amount, "reason": key})
        request = msgspec.json.decode(body, type=PlaceHoldRequest)
        services = cast(Services, _RouteServices(self.ledger))
        return await place(services, account_id, request, key)

    async def leave_a_default_hold(self, account_id: str) -> None:
        """A hold whose request names no expiry, left: the clock moves to a second before
        its default expiry, to it, or past it. Read then, the hold is open before and expired
        from its expiry on, swept or not, and the balance read counts it so ("a balance
        never counts a hold past its expiry"); later steps find it expired (a capture
        refused, a release answered by its expiry)."""
        before = set(self.accounts[account_id].holds)
        await self.place_hold(account_id, None)
        [*placed] = set(self.accounts[account_id].holds) - before
        if not placed:  # refused (402), or a retry of an earlier hold
            return
        [hold_id] = placed
        due = self.accounts[account_id].holds[hold_id].expires_at
        self.now = max(self.now, due + timedelta(seconds=self.random.choice([-1, 0, 1, 600])))
        expected = "expired" if self.now >= due else "held"
        shown = await self.ledger.hold(account_id, hold_id)
        if shown.status != expected:
            raise Violation(
                f"a hold at its default expiry {due} shown {shown.status} at {self.now}"
            )
        account = self.with_due_expired(account_id)  # a copy: a read records nothing
        read = await self.ledger.account_now(account_id)
        if (read.held, read.available, shown.held) != (
            account.held,
            account.available,
            account.held,
        ):
            raise Violation(
                f"a read by a hold at its default expiry: held/available {read.held}/"
                f"{read.available} (the hold's answer: {shown.held}), the rules say "
                f"{account.held}/{account.available}"
            )
        self.counts[f"holds left to their default expiry, read {expected}"] += 1

    async def settle_hold(self, account_id: str) -> None:
        account = self.accounts[account_id]
        if not account.holds:
            return
        hold_id = self.random.choice(sorted(account.holds))
        hold = account.holds[hold_id]
        expired = self.now >= hold.expires_at
        choice = self.random.random()
        command = SettleHold(account_id=account_id, hold_id=hold_id, outcome="released")
        captured = 0
        if choice < 0.5:
            captured = self.random.randint(0, hold.amount)
            command = SettleHold(
                account_id=account_id, hold_id=hold_id, outcome="captured", amount=captured
            )
        elif choice >= 0.8:
            command = SettleHold(account_id=account_id, hold_id=hold_id, outcome="expired")
        try:
            answer = await self.answered(command)
        except HoldHasExpired:
            if not expired:
                raise Violation("a hold not yet due was refused as expired") from None
            self.counts["late captures refused"] += 1
            return
        except HoldNotDue:
            if expired:
                raise Violation("a hold past its expiry was refused as not due") from None
            return
        if command.outcome == "captured" and expired:
            raise Violation("an expired hold was captured")
        if answer.status != ("expired" if expired else command.outcome):
            # "A release of an expired hold answers its expiry", swept or not.
            raise Violation(f"a {command.outcome} hold answered {answer.status}")
        # The expiries due first, "in the order they fell due" (a hold past its own is
        # settled among them): its answer and notification count no hold or grant past its
        # expiry, as a balance read, and a grant that expired while the hold was open has
        # closed when it settles.
        account = self.with_due_expired(account_id)
        if not expired:
            account.settle(hold_id, captured)
        self.keep_due_expired(account_id, account)
        self.touched.add(account_id)
        self.counts[f"holds {answer.status}"] += 1
        if resets := self.resets[account_id] - self.resets_before[hold_id]:
            self.counts[f"holds settled {'2+' if resets > 1 else 1} reset(s) after placed"] += 1
        if (answer.held, answer.available) != (account.held, account.available):
            raise Violation("a settled hold answered other balances than the rules")
        if answer.status == "captured":
            try:
                await self.answered(
                    SettleHold(account_id=account_id, hold_id=hold_id, outcome="released")
                )
            except HoldAlreadySettled:
                return
            raise Violation("a captured hold was released again")

    async def capture_too_much(self, account_id: str) -> None:
        """A capture of more than the hold reserves (the work cost more than estimated):
        "more than held: 422" (``CaptureExceedsHold``); past its expiry or settled, 409. It
        records nothing and leaves the hold as it was: a capture of what the hold reserves,
        under the same key, is then taken as if the refused one had never come."""
        account = self.accounts[account_id]
        settled = sorted(
            answer.hold_id
            for acct, answer in self.placed.values()
            if acct == account_id and answer.hold_id not in account.holds
        )
        if account.holds and (not settled or self.random.random() < 0.8):
            hold_id = self.random.choice(sorted(account.holds))
            reserved = account.holds[hold_id].amount
            expired: bool | None = self.now >= account.holds[hold_id].expires_at
        elif settled:
            hold_id = self.random.choice(settled)
            reserved = next(a.amount for _, a in self.placed.values() if a.hold_id == hold_id)
            expired = None  # settled
        else:
            return
        amount = reserved + self.random.choice([1, 2, reserved, 10**6])
        key = self.new_id("capture-key") if self.random.random() < 0.5 else None
        stream = account_stream_id(account_id)
        before = len(await stream_events(self.store, stream))
        try:
            await self.answered(
                SettleHold(
                    account_id=account_id,
                    hold_id=hold_id,
                    outcome="captured",
                    amount=amount,
                    idempotency_key=key,
                )
            )
            outcome = "taken"
        except CaptureExceedsHold:
            outcome = "too much"
        except HoldHasExpired:
            outcome = "expired"
        except HoldAlreadySettled:
            outcome = "settled"
        state = {False: "open", True: "expired", None: "settled"}[expired]
        allowed = {"open": {"too much"}, "expired": {"expired"}, "settled": {"expired", "settled"}}
        if outcome not in allowed[state]:
            raise Violation(
                f"a capture of {amount} of a hold of {reserved} ({state}) was {outcome}"
            )
        if len(await stream_events(self.store, stream)) != before:
            raise Violation(f"a capture of {amount} of a hold of {reserved}, refused, recorded")
        self.touched.add(account_id)
        self.counts[f"captures of more than held refused ({outcome})"] += 1
        if expired is False and self.random.random() < 0.5:
            account = self.with_due_expired(account_id)
            answer = await self.answered(
                SettleHold(
                    account_id=account_id,
                    hold_id=hold_id,
                    outcome="captured",
                    amount=reserved,
                    idempotency_key=key,
                )
            )
            account.settle(hold_id, reserved)
            self.keep_due_expired(account_id, account)
            if (answer.status, answer.captured, answer.held, answer.available) != (
                "captured",
                reserved,
                account.held,
                account.available,
            ):
                raise Violation(f"a capture after one of too much refused answered {answer}")
            self.counts["holds captured in full after too much was refused"] += 1

    async def grant(self, account_id: str) -> None:
        account = self.accounts[account_id]
        mine = [key for key, (acct, _) in self.granted.items() if acct == account_id]
        if mine and self.random.random() < 0.2:  # a client retrying a grant it gave
            key = self.random.choice(mine)
            first = self.granted[key][1]
            again = await self.answered(
                grant_command(account_id, first.amount, first.priority, first.expires_at, key)
            )
            if again.grant_id != first.grant_id or again.amount != first.amount:
                raise Violation("a repeated grant key gave another grant")
            self.counts["repeated grants"] += 1
            return
        key = self.new_id("grant-key")
        amount = self.random.choice([20, 100, 500, 1500])
        priority = self.random.choice([0, 10, 50, 50, 90])
        lifetime = self.random.choice([None, 2, 40, 24 * 20])
        expires_at = None if lifetime is None else self.now + timedelta(hours=lifetime)
        account = self.with_due_expired(account_id)
        answer = await self.answered(
            grant_command(account_id, amount, priority, expires_at and expires_at.isoformat(), key)
        )
        self.keep_due_expired(account_id, account)
        account.grants[answer.grant_id] = model.Grant(amount, priority, expires_at, self.ids)
        if answer.granted != account.granted:
            raise Violation(f"granted {answer.granted}, the rules say {account.granted}")
        self.granted[key] = (account_id, answer)
        self.touched.add(account_id)
        self.counts["grants"] += 1

    async def void_grant(self, account_id: str) -> None:
        if not self.accounts[account_id].grants:
            return
        grant_id = self.random.choice(sorted(self.accounts[account_id].grants))
        account = self.with_due_expired(account_id)
        grant = account.grants[grant_id]
        # With a key, a void's retry after an answer lost mid-commit gets the first answer.
        key = self.new_id("void-key") if self.random.random() < 0.5 else None
        try:
            answer = await self.answered(
                VoidGrant(
                    account_id=account_id,
                    grant_id=grant_id,
                    reason="withdrawn",
                    idempotency_key=key,
                )
            )
        except GrantClosed:
            if grant.usable_at(self.now):  # past its expiry, a grant has expired: refused
                if key is not None:
                    raise Violation("a keyed void's retry was refused, not answered") from None
                # Without a key, a void's retry after an answer lost mid-commit is refused,
                # and the first attempt must be on record.
                if not await self.closed_in_store(account_id, grant_id):
                    raise Violation("an active grant was refused as closed") from None
                self.keep_due_expired(account_id, account)
                account.close_grant(grant_id, "voided")
                self.touched.add(account_id)
                self.counts["voids retried after a lost answer"] += 1
                return
            self.counts["voids of closed grants refused"] += 1
            return
        if not grant.usable_at(self.now):
            raise Violation(f"a grant {grant.status} or past its expiry was voided")
        self.keep_due_expired(account_id, account)
        lapsed = account.close_grant(grant_id, "voided")
        if answer.lapsed != lapsed:
            raise Violation(f"a void let {answer.lapsed} lapse, the rules say {lapsed}")
        self.touched.add(account_id)
        self.counts["grants voided"] += 1

    async def expire_grants(self) -> None:
        """The sweeper, late: every active grant past its expiry, on any account. Each
        expiry it records comes with the account's other expiries due (in the order they
        fell due), as any command's: its answer and notification count none of them."""
        for account_id in sorted(self.accounts):
            for grant_id in sorted(self.accounts[account_id].grants):
                grant = self.accounts[account_id].grants[grant_id]
                if grant.status != "active" or grant.usable_at(self.now):
                    continue
                account = copy.deepcopy(self.accounts[account_id])
                lapsed = expire_due(account, self.now)[grant_id]
                try:
                    answer = await self.answered(
                        ExpireGrant(account_id=account_id, grant_id=grant_id)
                    )
                except GrantNotDue:
                    # Recorded by an attempt whose answer was lost (as between two sweepers).
                    if not await self.closed_in_store(account_id, grant_id):
                        raise Violation(f"grant {grant_id} is past its expiry, not due") from None
                    answer = None
                self.accounts[account_id] = account
                self.keep_due_expired(account_id, self.with_due_expired(account_id))
                self.touched.add(account_id)
                if answer is None:
                    continue
                if answer.lapsed != lapsed:
                    raise Violation(f"an expiry let {answer.lapsed} lapse, the rules say {lapsed}")
                if answer.available != self.accounts[account_id].available:
                    raise Violation(
                        f"an expiry answered {answer.available} available, the rules say "
                        f"{self.accounts[account_id].available}"
                    )
                self.counts["grants expired"] += 1

    async def closed_in_store(self, account_id: str, grant_id: str) -> bool:
        replayed = await Repository(self.store, cache_size=0).get(
            CreditAccount, account_stream_id(account_id)
        )
        assert replayed is not None
        grant = replayed.grants.get(grant_id)
        return grant_id in replayed.closed_grants or (
            grant is not None and grant.status != "active"
        )

    async def reset(self, account_id: str) -> None:
        account = self.accounts[account_id]
        current = self.now.strftime("%Y-%m")
        period = self.random.choice([current, current, account.period, "2029-12"])
        try:
            await self.answered(ResetMonth(account_id=account_id, period=period))
        except PeriodOutOfOrder:
            if period >= account.period:
                raise Violation(f"reset to {period} refused from {account.period}") from None
            self.counts["resets refused"] += 1
            return
        if period > account.period:
            account = self.with_due_expired(account_id)
            self.keep_due_expired(account_id, account)
            account.reset(period)
            self.resets[account_id] += 1
            self.counts["resets"] += 1
        self.touched.add(account_id)

    async def reset_ahead(self, account_id: str) -> None:
        """The caller's billing cycle ahead of the calendar ("the ledger enforces order and
        idempotency, not the calendar"): a reset to the period after the account's, so that
        resets come closer together than holds and grants live."""
        period = next_period(self.accounts[account_id].period)
        await self.answered(ResetMonth(account_id=account_id, period=period))
        account = self.with_due_expired(account_id)
        self.keep_due_expired(account_id, account)
        account.reset(period)
        self.resets[account_id] += 1
        self.touched.add(account_id)
        self.counts["resets ahead of the calendar"] += 1

    async def change_plan(self, account_id: str) -> None:
        allowance = self.random.choice([0, 100, 500, 1000])
        await self.answered(ChangeAllowance(account_id=account_id, monthly_allowance=allowance))
        self.accounts[account_id].next_allowance = allowance

    async def set_threshold(self, account_id: str) -> None:
        """A low-balance threshold of its own, or back to the default (10 % of the plan)."""
        threshold = self.random.choice([None, 0, 50, 200, 1000, 5000])
        account = self.with_due_expired(account_id)
        await self.answered(SetLowBalanceThreshold(account_id=account_id, threshold=threshold))
        self.keep_due_expired(account_id, account)  # its alerts are judged after them
        self.accounts[account_id].low_threshold = threshold
        self.touched.add(account_id)
        self.counts["thresholds set"] += 1

    async def step(self) -> str:
        roll = self.random.random()
        if not self.accounts or roll < 0.03:
            await self.open_account()
            return "open"
        account_id = self.random.choice(sorted(self.accounts))
        sessions = sorted(self.sessions)
        paid = [s for s in sessions if self.sessions[s].status == "paid"]

        # Mostly paid sessions, sometimes one whose payment is still on its way.
        def target() -> str:
            return self.random.choice(paid if paid and self.random.random() < 0.7 else sessions)

        steps: list[Step] = [
            (0.15, "purchase", lambda: self.purchase(account_id)),
            (0.15, "keyed purchase", lambda: self.purchase_with_a_key(account_id)),  # SIM_MIX
            (
                0.15,
                "reused purchase key",
                lambda: self.purchase_key_reused(account_id),
            ),  # SIM_MIX only
            (0.37, "deliver", self.deliver if self.network else lambda: None),
            (
                0.40,
                "refund",
                lambda: self.refund(self.random.choice(sessions)) if sessions else None,
            ),
            (0.41, "fail refund", self.fail_refund),  # a third as often as refunds
            (
                0.43,
                "dispute",
                lambda: self.dispute(self.random.choice(sessions)) if sessions else None,
            ),
            (0.60, "spend", lambda: self.spend(account_id)),
            (0.60, "burst", lambda: self.burst(account_id)),  # SIM_MIX only: OFF_BY_DEFAULT
            (0.67, "hold", lambda: self.place_hold(account_id)),
            (0.67, "long hold", lambda: self.place_hold_for_long(account_id)),  # SIM_MIX only
            (0.67, "default hold", lambda: self.leave_a_default_hold(account_id)),  # SIM_MIX only
            (0.74, "settle hold", lambda: self.settle_hold(account_id)),
            (0.74, "capture too much", lambda: self.capture_too_much(account_id)),  # SIM_MIX only
            (0.79, "grant", lambda: self.grant(account_id)),
            (0.805, "void grant", lambda: self.void_grant(account_id)),
            (0.83, "expire grants", self.expire_grants),
            (0.87, "turn time", self.turn_time),
            (0.91, "reset", lambda: self.reset(account_id)),
            (0.91, "reset ahead", lambda: self.reset_ahead(account_id)),  # SIM_MIX only
            (0.94, "plan", lambda: self.change_plan(account_id)),
            (0.95, "threshold", lambda: self.set_threshold(account_id)),
            (0.997, "project with a kill", self.project_with_a_kill),
            (1.01, "restart the database", self.restart),
        ]
        for bound, name, action in mixed(steps, self.mix):
            if roll < bound:
                outcome = action()
                if outcome is not None:
                    await outcome
                return name
        raise AssertionError("unreachable")

    async def restart(self) -> None:
        """PostgreSQL stops and starts again, where this run owns the server."""
        if self.restart_database is not None:
            await self.restart_database()
            self.counts["database restarts"] += 1

    async def turn_time(self) -> None:
        """The clock jumps: across hold expiries, and months."""
        self.now += timedelta(hours=self.random.choice([1, 30, 80, 24 * 31]))

    # --- checks ----------------------------------------------------------------------------

    async def check(self, step: int) -> None:
        fresh = Repository(self.store, cache_size=0)
        for account_id in sorted(self.touched):
            account = self.accounts[account_id]
            account.watch()
            replayed = await fresh.get(CreditAccount, account_stream_id(account_id))
            if replayed is None:
                raise Violation(f"{account_id} was never stored")
            figures = (replayed.allowance_remaining, replayed.topup_balance, replayed.period)
            expected = (account.allowance_remaining, account.topup, account.period)
            if figures != expected:
                raise Violation(f"{account_id}: stored {figures}, the rules say {expected}")
            if (replayed.held, sorted(replayed.holds)) != (account.held, sorted(account.holds)):
                raise Violation(
                    f"{account_id}: holds {sorted(replayed.holds)} vs {sorted(account.holds)}"
                )
            if replayed.allowance_remaining < 0:
                raise Violation(f"{account_id}: negative allowance")
            self.check_grants(account_id, replayed)
        for session_id in sorted(self.sessions_touched):
            await self.check_purchase(fresh, session_id)
        self.sessions_touched.clear()
        self.touched_since_views |= self.touched
        self.touched.clear()
        if step % VIEW_CHECK_EVERY == 0:
            await self.check_views(self.accounts_to_view())

    async def check_purchase(self, fresh: Repository, session_id: str) -> None:
        """A purchase, replayed from the store, as the rules leave it: its status, the money
        refunded and what refunds, and disputes, took back of its credits."""
        session = self.sessions[session_id]
        replayed = await fresh.get(CheckoutSession, checkout_stream_id(session_id))
        if replayed is None:
            raise Violation(f"purchase {session_id} was never stored")
        found: tuple[Any, ...] = (
            replayed.status,
            replayed.credits_clawed_back,
            replayed.credits_reversed,
        )
        expected: tuple[Any, ...] = (session.shown_as(), *session.owed())
        if session.status == "paid":  # only a paid session is told its refunds
            found += (replayed.amount_refunded,)
            expected += (session.money_refunded(),)
        if found != expected:
            raise Violation(
                f"purchase {session_id}: stored (status, clawed back, reversed, refunded) "
                f"{found}, the rules say {expected}"
            )

    def accounts_to_view(self) -> list[str]:
        """The accounts a view check compares: those touched since the last one, and a few
        others in turn. All of them each time made a seed's run quadratic in its steps (at
        3,000 steps the view checks took two thirds of the time); the end compares all."""
        every = sorted(self.accounts)
        start = self.viewed_in_turn % len(every)
        in_turn = (every[start:] + every[:start])[:VIEWED_IN_TURN]
        self.viewed_in_turn += VIEWED_IN_TURN
        chosen = sorted(self.touched_since_views | set(in_turn))
        self.touched_since_views.clear()
        return chosen

    def check_grants(self, account_id: str, replayed: CreditAccount) -> None:
        """Each grant as the rules leave it; none below zero; a closed one is kept by the
        account only while a hold reserves some of it."""
        account = self.accounts[account_id]
        for grant_id, grant in account.grants.items():
            if grant.remaining < 0 or grant.remaining < account.reserved_of(grant_id):
                raise Violation(f"{account_id}: grant {grant_id} went below zero")
            stored = replayed.grants.get(grant_id)
            found = (stored.remaining, stored.status) if stored else (0, "closed")
            expected = (grant.remaining, grant.status)
            if stored is None and grant.status != "active" and grant.remaining == 0:
                continue
            if found != expected:
                raise Violation(
                    f"{account_id}: grant {grant_id} is {found}, the rules say {expected}"
                )
        if replayed.granted != account.granted:
            raise Violation(f"{account_id}: granted {replayed.granted}, rules {account.granted}")

    def check_grants_accounted_for(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """From the events alone: every grant's credits spent, lapsed or remaining, and
        closed at most once."""
        given: Counter[str] = Counter()
        used: Counter[str] = Counter()
        closed: Counter[str] = Counter()
        for kind, data in events:
            if kind == "CreditsGranted":
                given[data["grant_id"]] += data["amount"]
            if kind in ("GrantExpired", "GrantVoided"):
                closed[data["grant_id"]] += 1
            spent, lapsed = taken_from_grants(kind, data)
            used.update(spent)
            used.update(lapsed)
        remaining = {
            grant_id: grant.remaining
            for account in self.accounts.values()
            for grant_id, grant in account.grants.items()
        }
        for grant_id, amount in given.items():
            if amount != used[grant_id] + remaining[grant_id]:
                raise Violation(
                    f"grant {grant_id}: {amount} given, {used[grant_id]} spent or lapsed, "
                    f"{remaining[grant_id]} remaining"
                )
        if set(closed.values()) - {1}:
            raise Violation(f"a grant closed twice: {closed.most_common(1)}")

    async def subscribe(self) -> None:
        """An endpoint for the alerts: their deliveries are what the model's crossings say."""
        await EndpointRegistry(self.pool, allow_private=True).create(
            "http://127.0.0.1:9/alerts", ["credits.low_balance", "credits.depleted"]
        )

    async def check_alerts(self) -> None:
        """Every crossing the model saw is one delivery, and there are no others."""
        rows = await self.pool.fetch(
            """SELECT account_id, event_type, count(*) AS sent FROM webhook_deliveries
               GROUP BY account_id, event_type"""
        )
        sent = {(r["account_id"], r["event_type"]): r["sent"] for r in rows}
        expected = {
            (account_id, kind): count
            for account_id, account in self.accounts.items()
            for kind, count in account.alerts.items()
        }
        if sent != expected:
            differ = sorted(
                (key, sent.get(key, 0), expected.get(key, 0))
                for key in sent.keys() | expected.keys()
                if sent.get(key, 0) != expected.get(key, 0)
            )
            raise Violation(f"alerts (account, type, sent, crossings): {differ[:5]}")
        self.counts["alerts"] = sum(sent.values())

    async def check_views(self, account_ids: list[str] | None = None) -> None:
        """The views, caught up, equal the replay for these accounts (None: every one)."""
        # Every append made so far must be past the watermark before the views catch up
        # (a transaction elsewhere on the server can hold it back for a moment), and the
        # views past the last of them: one catch-up can stop short (see views_past).
        tail = await settled(self.store, seconds=30)
        if self.projector_turns.random() < 0.5:
            await views_past(self.store, tail)
        else:
            await views_past(self.store, tail, self.live, self.live_left_at)
        try:
            await assert_views_match_the_events(
                self.store, sorted(self.accounts) if account_ids is None else account_ids
            )
        except AssertionError as error:
            raise Violation(f"a view disagrees with the events: {error}") from None

    async def check_the_whole_history(self) -> int:
        """Every paid session credited once, no other; the audit finds nothing. Returns events."""
        await self.check_views()
        purchased: Counter[str] = Counter()
        events = await events_since(self.store, 0)
        self.counts.update(f"{STORED}{kind}" for kind, _ in events)
        for kind, data in events:
            if kind == "CreditsPurchased":
                purchased[data["session_id"]] += 1
        requested = {data["session_id"] for kind, data in events if kind == "CheckoutRequested"}
        if requested != set(self.sessions):
            raise Violation("sessions recorded differ from those Stripe made for the ledger")
        should_be_paid = {s for s, m in self.sessions.items() if m.status == "paid"}
        fresh = Repository(self.store, cache_size=0)
        for session_id, session in sorted(self.sessions.items()):
            # Everything delivered, the rule's money refunded is Stripe's: the refunds alive.
            if session.money_refunded() != sum(session.live_refunds.values()):
                raise Violation(
                    f"{session_id}: the rules say {session.money_refunded()} refunded, Stripe "
                    f"{sum(session.live_refunds.values())}: the model is wrong"
                )
            await self.check_purchase(fresh, session_id)
        if set(purchased) != should_be_paid:
            raise Violation(f"credited {sorted(purchased)} but paid {sorted(should_be_paid)}")
        if set(purchased.values()) - {1}:
            raise Violation("a session was credited twice")
        self.check_grants_accounted_for(events)
        await self.check_alerts()
        report = await verify(self.pool, max_time_skew=UNJUDGED)
        if report.findings:
            raise Violation(f"audit verify found {report.findings}")
        return len(events)


STEP_NAMES = (
    "purchase", "keyed purchase", "reused purchase key", "deliver", "refund", "fail refund",
    "dispute", "spend", "burst", "hold", "long hold", "default hold", "settle hold",
    "capture too much", "grant", "void grant", "expire grants", "turn time", "reset",
    "reset ahead", "plan", "threshold", "project with a kill", "restart the database",
)  # fmt: skip
"""The steps a schedule picks from (after "open"), as ``SIM_MIX`` names them."""

OFF_BY_DEFAULT = {
    "burst": 0.05,
    "long hold": 0.05,
    "reset ahead": 0.02,
    "keyed purchase": 0.05,
    "reused purchase key": 0.02,
    "default hold": 0.03,
    "capture too much": 0.03,
}
"""Steps the default schedule never takes (so that every seed's stays as it was), and the
chance a mix that names them weighs."""

Step = tuple[float, str, Callable[[], Awaitable[None] | None]]


def due_expiries(account: model.Account, now: datetime) -> list[tuple[datetime, int, int, str]]:
    """The holds and grants past their expiry at ``now``: "in the order they fell due, a hold
    before a grant at the same instant" (holds then in the order placed)."""
    holds = [
        (hold.expires_at, 0, n, hold_id)
        for n, (hold_id, hold) in enumerate(account.holds.items())
        if now >= hold.expires_at
    ]
    grants = [
        (grant.expires_at, 1, n, grant_id)
        for n, (grant_id, grant) in enumerate(account.grants.items())
        if grant.expires_at is not None and grant.status == "active" and now >= grant.expires_at
    ]
    return sorted(holds + grants)


def expire_due(account: model.Account, now: datetime) -> dict[str, int]:
    """Record the expiries due at ``now`` in that order; what each grant's let lapse."""
    lapsed = {}
    for _, kind, _, key in due_expiries(account, now):
        if kind == 0:
            account.settle(key, 0)
        else:
            lapsed[key] = account.close_grant(key, "expired")
    return lapsed


def credits_moved(
    session: model.Session, event: PaymentEvent
) -> tuple[int, tuple[int, int] | None]:
    """What a Stripe event, delivered for the first time, moves on its session's account by
    the rules: the credits its payment adds, and what refunds, then disputes, take back more
    (negative: give back), None where neither part moves. Where either moves, the ledger
    records the account's due expiries first (tests/simulation/test_model_expiries.py)."""
    credited = 0
    match event:
        case CheckoutEvent(change=CheckoutChange.EXPIRED):
            if session.status == "pending":
                session.status = "expired"
        case CheckoutEvent(change=CheckoutChange.PAYMENT_FAILED):
            if session.status == "pending":
                session.status = "failed"
        case CheckoutEvent(paid=False):
            pass
        case CheckoutEvent() if event.amount_total != session.amount:
            if session.status != "paid":  # credits nothing, then or later
                session.status = "mismatched"
        case CheckoutEvent():
            if session.status != "paid":  # money for an expired session is still credited
                session.status = "paid"
                credited = session.credits
        case RefundEvent():
            session.learn_refund(event.amount_refunded)
        case RefundUpdate():
            session.learn_refund_status(event.refund_id, event.status, event.amount)
        case DisputeEvent():
            session.learn_dispute(event.dispute_id, event.status, event.amount or 0)
    owed = session.owed()
    if owed == session.taken_back:
        return credited, None
    before, session.taken_back = session.taken_back, owed
    return credited, (owed[0] - before[0], owed[1] - before[1])


def parse_mix(text: str | None) -> dict[str, float]:
    """``SIM_MIX``: ``refund=4,dispute=4,settle-hold=3`` weighs those steps 4, 4 and 3 times
    as often as the default schedule does (0: never); names as ``STEP_NAMES``, with - or _
    for spaces."""
    mix: dict[str, float] = {}
    for part in filter(None, (text or "").split(",")):
        name, _, factor = part.partition("=")
        name = name.strip().replace("-", " ").replace("_", " ")
        if name not in STEP_NAMES or not factor:
            raise ValueError(f"SIM_MIX: {part!r} is not <step>=<factor>, steps {STEP_NAMES}")
        mix[name] = float(factor)
    return mix


def mix_text(mix: dict[str, float]) -> str:
    """``mix`` as ``SIM_MIX`` names it, for a shell: ``long-hold=8,reset-ahead=8``."""
    return ",".join(f"{name.replace(' ', '-')}={factor:g}" for name, factor in mix.items())


def mixed(steps: list[Step], mix: dict[str, float]) -> list[Step]:
    """The steps with their chances weighed by ``mix`` (unchanged without one: the default
    schedule of every seed stays as it was)."""
    if not mix:
        return steps
    weights, low = [], 0.0
    for bound, name, _ in steps:
        chance = OFF_BY_DEFAULT.get(name, max(min(bound, 1.0) - low, 0.0))
        weights.append(chance * mix.get(name, 1.0 if name not in OFF_BY_DEFAULT else 0.0))
        low = bound
    total, cumulative, weighed = sum(weights), 0.0, []
    for weight, (_, name, action) in zip(weights, steps, strict=True):
        cumulative += weight
        weighed.append((cumulative / total, name, action))
    return [*weighed[:-1], (2.0, *weighed[-1][1:])]


STORED = "stored "
"""The prefix of the counts of each event type in the store at the end."""


def taken_from_grants(kind: str, data: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """What an event's JSON says it spent of each grant, and let lapse of each."""
    spent = data.get("from_grants", {}) if kind in ("CreditsSpent", "HoldCaptured") else {}
    lapsed = dict(data.get("grants_lapsed", {}))
    if kind in ("GrantExpired", "GrantVoided"):
        lapsed[data["grant_id"]] = lapsed.get(data["grant_id"], 0) + data["lapsed"]
    return spent, lapsed


def grant_command(
    account_id: str, amount: int, priority: int, expires_at: str | None, key: str
) -> GrantCredits:
    return GrantCredits(
        account_id=account_id,
        amount=amount,
        priority=priority,
        expires_at=None if expires_at is None else datetime.fromisoformat(expires_at),
        reason=key,
        idempotency_key=key,
    )


def spend_command(account_id: str, amount: int, key: str) -> SpendCredits:
    return SpendCredits(account_id=account_id, amount=amount, reason=key, idempotency_key=key)


def hold_command(
    account_id: str, amount: int, reason: str, key: str, seconds: int = HOLD_SECONDS
) -> PlaceHold:
    return PlaceHold(
        account_id=account_id,
        amount=amount,
        expires_in_seconds=seconds,
        reason=reason,
        idempotency_key=key,
    )


def next_period(period: str) -> str:
    """The billing period after ``period`` (``YYYY-MM``)."""
    year, month = divmod(int(period[:4]) * 12 + int(period[5:7]), 12)  # month: the next's - 1
    return f"{year}-{month + 1:02d}"


def described(error: BaseException) -> str:
    """A violation's message; for anything else, what it was and where it was raised."""
    if isinstance(error, Violation):
        return str(error)
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{error!r}{where}"


async def simulate(
    seed: int,
    steps: int,
    pool: Any,
    standin: RunningStandin,
    restart_database: Callable[[], Awaitable[None]] | None = None,
    mix: dict[str, float] | None = None,
) -> World:
    """Run one seed to its end (``mix``: see ``parse_mix``). Raises Violation naming the
    seed and step."""
    world = World(seed, pool, standin, restart_database, mix)
    done: list[str] = []
    try:
        await world.subscribe()
        for number in range(1, steps + 1):
            done.append(await world.step())
            await world.check(number)
        while world.network:  # deliver what is still in flight
            await world.deliver()
            done.append("deliver")
            await world.check(len(done))
        world.counts["events"] = await world.check_the_whole_history()
        world.counts["steps"] = len(done)
    except Exception as error:
        raise Violation(
            f"seed {seed} failed at step {len(done)} ({done[-5:]}): {described(error)}\n"
            f"replay exactly this schedule: SIM_SEED={seed} SIM_STEPS={len(done)}"
            + (f" SIM_MIX={mix_text(mix)}" if mix else "")
        ) from error
    finally:
        await world.close()
    return world

"""Every event the ledger records, as declared types.

The aggregates record them, the projections, the audit, the notifier and the
relay read them: one declaration, no lists of names elsewhere. Each event is a
frozen dataclass (the eventsourcing library's ``Aggregate.Event``); what it
does to its aggregate is written in the aggregate (``evolve``), so this module
holds data only.

Names are past tense and never reused. An event's stored ``state`` is the JSON
of its fields; ``class_version`` and ``upcast_vN_vN+1`` read older shapes.
Events stored before this module existed have topics such as
``ledger.domain.account:CreditAccount.CreditsSpent``; ``register_topic`` at the
bottom maps them to these classes, so both read back the same.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import field
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate, BaseAggregate, _init_mentions_id
from eventsourcing.utils import get_topic, register_topic, resolve_topic

command_time: ContextVar[datetime | None] = ContextVar("command_time", default=None)
"""The time of the command being decided (``ledger.unit_of_work`` sets it around each
decision): the ``timestamp`` of every event the decision records without one of its own.
A decision records the expiries due at its command's time with that time; the events
beside them took the wall clock, so one write told two times, and a stream's went back."""
set_command_time, reset_command_time = command_time.set, command_time.reset
"""``command_time``'s, bound once: CPython 3.11 compiles a method call on a name an import made as an
attribute load, binding the method at each call (~500 instructions) (``ledger.request_scope.get_current_scope``)."""


class _Evolves:
    """Hands the event to its aggregate's ``evolve``: the aggregate owns its state changes."""

    def apply(self, aggregate: Any) -> None:
        aggregate.evolve(self)

    @staticmethod
    def create_timestamp() -> datetime:
        """The command's time (``command_time``), else (outside a command) the wall clock."""
        return command_time.get() or Aggregate.Event.create_timestamp()


class _Starts(_Evolves):
    """An event that starts a stream: its ``mutate`` makes the aggregate as the library's
    (``CanInitAggregate.mutate``) does, without the steps that do nothing for the ledger's
    aggregates, whose classes keep ``object``'s ``__init__``: the library picks out the
    event's fields that ``__base_init__`` and ``__init__`` name (by their signatures), calls
    both with them, then ``apply``; here the four base attributes are set as
    ``__base_init__`` sets them, in its order, then ``apply``. A Checkout session's load
    from its ``CheckoutRequested``, once a paid delivery, 33.0k -> 10.5k instructions
    (callgrind). A class with an ``__init__`` (or ``__new__``, ``__base_init__``) of its own
    takes the library's path. ``tests/unit/test_recording.py`` holds the two to the same
    state."""

    def mutate(self, aggregate: Any) -> Any:
        aggregate_class = resolve_topic(self.originator_topic)  # type: ignore[attr-defined]
        plain = _PLAIN.get(aggregate_class)
        if plain is None:
            plain = _PLAIN[aggregate_class] = _made_plainly(aggregate_class)
        if not plain:
            return super().mutate(aggregate)  # type: ignore[misc]
        assert aggregate is None
        made = aggregate_class.__new__(aggregate_class)
        made._id = self.originator_id  # type: ignore[attr-defined]
        made._version = self.originator_version  # type: ignore[attr-defined]
        made._created_on = self.timestamp  # type: ignore[attr-defined]
        made._modified_on = self.timestamp  # type: ignore[attr-defined]
        made._pending_events = []
        self.apply(made)
        return made


_PLAIN: dict[type, bool] = {}
"""Whether ``_Starts.mutate`` may make an aggregate of the class without the library."""


def _made_plainly(aggregate_class: type) -> bool:
    return (
        aggregate_class.__init__ is object.__init__  # type: ignore[misc]
        and aggregate_class.__new__ is object.__new__
        and aggregate_class.__base_init__ is BaseAggregate.__base_init__  # type: ignore[attr-defined]
        and aggregate_class not in _init_mentions_id
    )


class AccountEvent(_Evolves, Aggregate.Event):
    """An event on a credit account's stream."""


class CheckoutEvent(_Evolves, Aggregate.Event):
    """An event on a Checkout session's stream."""


class PaymentIntentEvent(_Evolves, Aggregate.Event):
    """An event on a payment intent's stream."""


# --- the credit account -------------------------------------------------------------------


class AccountOpened(_Starts, Aggregate.Created):
    """An account opened with its plan's full allowance for ``period``."""

    account_id: str
    monthly_allowance: int
    period: str


class CreditsPurchased(AccountEvent):
    """A paid top-up: ``credits`` added to the top-up balance, which survives every reset."""

    session_id: str
    credits: int


class CreditsClawedBack(AccountEvent):
    """A refund took back ``credits`` of a purchase (the top-up balance may go below zero)."""

    session_id: str
    credits: int


class CreditsReversed(AccountEvent):
    """A chargeback took back ``credits`` of a purchase while the bank holds the money."""

    session_id: str
    dispute_id: str
    credits: int


class CreditsRestored(AccountEvent):
    """Credits a dispute had taken back came back (won, or the money is accounted for otherwise),
    or, with a ``refund_id``, credits a refund's clawback took came back: the refund failed
    (or was canceled) and returned no money (``dispute_id`` is then empty)."""

    session_id: str
    dispute_id: str
    credits: int
    refund_id: str = ""


class CreditsSpent(AccountEvent):
    """Credits spent: the free allowance first, then grants, then top-ups.

    ``from_grants``: what it took from each grant (events before grants have none).
    """

    amount: int
    from_allowance: int
    from_topup: int
    reason: str
    from_grants: dict[str, int] = field(default_factory=dict)


class MonthlyAllowanceReset(AccountEvent):
    """A new period: the allowance is set (not added to) to the plan, plus what open holds carried."""

    period: str
    monthly_allowance: int
    held_allowance_carried: int = 0
    debt_repaid: int = 0
    """Of the allowance that lapsed, what went to a negative top-up balance (a clawback's
    debt): the debt kept that much of it from being spent."""
    held_topup_kept: int = 0
    """Of the allowance that lapsed, what is kept for top-ups open holds reserve that a
    clawback took (resets before this field repaid it into the top-ups): spent if the holds
    capture them, lapsing if not (``kept_spent`` and ``kept_lapsed`` on settlements)."""


class MonthlyAllowanceChanged(AccountEvent):
    """The plan's allowance from the next reset on."""

    monthly_allowance: int


class LowBalanceThresholdSet(AccountEvent):
    """Below this ``available`` counts as low (None: 10 % of the allowance)."""

    threshold: int | None


def low_balance_threshold(monthly_allowance: int, threshold: int | None) -> int:
    """Below this ``available`` is low: the account's own ``threshold``
    (``LowBalanceThresholdSet``), or 10 % of its monthly allowance, rounded down."""
    return monthly_allowance // 10 if threshold is None else threshold


class HoldPlaced(AccountEvent):
    """Credits reserved for work in progress; ``expires_at`` is an ISO 8601 time."""

    hold_id: str
    amount: int
    from_allowance: int
    from_topup: int
    reason: str
    expires_at: str
    from_grants: dict[str, int] = field(default_factory=dict)


class HoldCaptured(AccountEvent):
    """A hold spent ``captured`` and gave back ``released``.

    ``lapsed`` of what it gave back ended with its period (a carried allowance share);
    ``grants_lapsed`` ended with its grant (expired or voided while the hold was open).
    """

    hold_id: str
    captured: int
    from_allowance: int
    from_topup: int
    released: int
    lapsed: int
    from_grants: dict[str, int] = field(default_factory=dict)
    grants_lapsed: dict[str, int] = field(default_factory=dict)
    kept_spent: int = 0
    """Of its top-ups captured, what a reset kept for them (taken from the allowance)."""
    kept_lapsed: int = 0
    """Of what resets kept for held top-ups, what the holds left open no longer need."""
    debt_repaid: int = 0
    """Of ``lapsed``, what went to a negative top-up balance (a clawback's debt), as the
    allowance a reset lets lapse does (settlements before this field repaid none)."""


class HoldReleased(AccountEvent):
    """A hold gave all its credits back (``lapsed`` and ``grants_lapsed`` of them ended)."""

    hold_id: str
    released: int
    lapsed: int
    grants_lapsed: dict[str, int] = field(default_factory=dict)
    kept_lapsed: int = 0
    debt_repaid: int = 0
    """Of ``lapsed``, what repaid a clawback's debt (as on ``HoldCaptured``)."""


class HoldExpired(AccountEvent):
    """A hold reached its expiry unsettled and gave its credits back."""

    hold_id: str
    released: int
    lapsed: int
    grants_lapsed: dict[str, int] = field(default_factory=dict)
    kept_lapsed: int = 0
    debt_repaid: int = 0
    """Of ``lapsed``, what repaid a clawback's debt (as on ``HoldCaptured``)."""


class CreditsGranted(AccountEvent):
    """Credits given, not bought: they burn after the allowance and before top-ups.

    Lower ``priority`` burns first; ``expires_at`` (ISO 8601, None: never) is when
    what remains lapses.
    """

    grant_id: str
    amount: int
    priority: int
    expires_at: str | None
    reason: str


class GrantExpired(AccountEvent):
    """A grant reached its expiry: ``lapsed`` of it ended (what holds reserve lapses later)."""

    grant_id: str
    lapsed: int


class GrantVoided(AccountEvent):
    """A grant was withdrawn: ``lapsed`` of it ended now."""

    grant_id: str
    lapsed: int
    reason: str


HOLD_SETTLEMENTS: tuple[type[HoldCaptured], type[HoldReleased], type[HoldExpired]] = (
    HoldCaptured,
    HoldReleased,
    HoldExpired,
)
"""The events that end a hold."""

STATEMENT_EVENTS: tuple[type[Aggregate.Event], ...] = (
    AccountOpened,
    CreditsSpent,
    MonthlyAllowanceReset,
    CreditsPurchased,
    CreditsClawedBack,
    CreditsReversed,
    CreditsRestored,
    HoldPlaced,
    *HOLD_SETTLEMENTS,
    CreditsGranted,
    GrantExpired,
    GrantVoided,
)
"""The account events that make a line of its statement: each moves credits, or holds them.

The statement projection writes a line for these and no others; the audit counts them.
"""


# --- the Checkout session -----------------------------------------------------------------


class CheckoutRequested(_Starts, Aggregate.Created):
    """A Checkout session created at Stripe for a top-up.

    Version 2 added ``recovered``: the session was first seen in a webhook and
    rebuilt from its metadata (version 1 events were all requested by us).
    """

    class_version: ClassVar[int] = 2

    session_id: str
    account_id: str
    credits: int
    amount: int
    currency: str
    checkout_url: str
    expires_at: int
    recovered: bool

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["recovered"] = False


class CheckoutPaid(CheckoutEvent):
    """The payment arrived: the session's credits were added to its account."""

    payment_intent: str | None
    amount_paid: int


class PaymentMismatched(CheckoutEvent):
    """Money arrived, but not what was asked: nothing credited until someone looks."""

    amount_paid: int
    currency: str


class CheckoutExpired(CheckoutEvent):
    """The session expired unpaid."""


class CheckoutFailed(CheckoutEvent):
    """A delayed payment method failed."""


class PaymentRefunded(CheckoutEvent):
    """Stripe's cumulative ``amount_refunded`` grew; ``credits_clawed_back`` were taken back.

    ``credits_restored``: credits a chargeback had taken back that the refund now
    accounts for instead (a refund after a lost dispute never takes them twice).
    """

    amount_refunded: int
    credits_clawed_back: int
    credits_restored: int = 0
    refunded_now: int | None = None
    """The money the refunds return after it, when refunds known to have failed make it less
    than ``amount_refunded`` (None: ``amount_refunded``, as before refunds were known by id)."""


class RefundUpdated(CheckoutEvent):
    """A refund of the payment, known by its id, reached ``status`` (Stripe's: ``pending``,
    ``requires_action``, ``succeeded``, or ``failed`` and ``canceled``, which return nothing).

    ``amount_refunded``: the money the refunds return after it (ledger/domain/adjustments.py).
    ``credits_clawed_back`` were taken back or ``credits_given_back`` given back for the
    refunds; ``credits_reversed`` or ``credits_restored`` for a chargeback, whose share is what
    the refunds leave.
    """

    refund_id: str
    amount: int
    status: str
    amount_refunded: int
    credits_clawed_back: int
    credits_given_back: int
    credits_reversed: int
    credits_restored: int


class DisputeUpdated(CheckoutEvent):
    """A dispute (or an inquiry) of the payment reached ``status``.

    ``credits_reversed`` were taken back, or ``credits_restored`` given back, so
    that the purchase is worth what its money still is (see ledger/domain/adjustments.py).
    """

    dispute_id: str
    status: str
    amount: int
    credits_reversed: int
    credits_restored: int


class PaymentDisputed(CheckoutEvent):
    """Before inquiries were told apart: a dispute that reversed ``credits_reversed``. Read only."""

    dispute_id: str
    credits_reversed: int


class DisputeClosed(CheckoutEvent):
    """Before inquiries were told apart: a dispute closed, won or lost. Read only."""

    dispute_id: str
    won: bool
    credits_restored: int


# --- the payment intent -------------------------------------------------------------------


class PaymentIntentRecorded(_Starts, Aggregate.Created):
    """A Stripe payment intent the ledger heard of; ``session_id`` once its Checkout is known."""

    payment_intent: str
    session_id: str | None


class PaymentIntentLinked(PaymentIntentEvent):
    """The Checkout session this payment intent paid became known."""

    session_id: str


class RefundRecordedBeforePayment(PaymentIntentEvent):
    """A refund arrived before the payment it refunds; it is applied when the payment lands."""

    amount_refunded: int


class RefundUpdateRecordedBeforePayment(PaymentIntentEvent):
    """A refund's status, known by its id, arrived before the payment it refunds; it is applied
    when the payment lands."""

    refund_id: str
    amount: int
    status: str


class DisputeRecordedBeforePayment(PaymentIntentEvent):
    """A dispute arrived before the payment it disputes; it is applied when the payment lands.

    ``amount`` None: Stripe did not say (the money the refunds leave is meant: applied as a
    dispute of the whole charge, which the rule caps at that).
    """

    dispute_id: str
    status: str
    amount: int | None


_OLD_TOPICS: dict[type, str] = {}


def topics_of(cls: type) -> list[str]:
    """Every topic events of ``cls`` are stored under: its own, and the one before this module."""
    return [get_topic(cls), *([_OLD_TOPICS[cls]] if cls in _OLD_TOPICS else [])]


def _register_old_topics() -> None:
    """Events stored before this module read back as its classes."""
    old = {
        "ledger.domain.account:CreditAccount.": (
            AccountOpened,
            CreditsPurchased,
            CreditsClawedBack,
            CreditsReversed,
            CreditsRestored,
            CreditsSpent,
            MonthlyAllowanceReset,
            MonthlyAllowanceChanged,
            LowBalanceThresholdSet,
            HoldPlaced,
            HoldCaptured,
            HoldReleased,
            HoldExpired,
        ),
        "ledger.domain.checkout:CheckoutSession.": (
            CheckoutRequested,
            CheckoutPaid,
            PaymentMismatched,
            CheckoutExpired,
            CheckoutFailed,
            PaymentRefunded,
            PaymentDisputed,
            DisputeClosed,
        ),
    }
    for prefix, classes in old.items():
        for cls in classes:
            register_topic(prefix + cls.__name__, cls)
            _OLD_TOPICS[cls] = prefix + cls.__name__


_register_old_topics()

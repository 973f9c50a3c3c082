"""``ledger audit verify``: replay every event and prove the ledger right.

Everything is read in one REPEATABLE READ snapshot, so the events, the views
and their positions agree with each other. Events stream through a server-side
cursor in commit order: memory grows with the number of streams (accounts and
Checkout sessions), never with the number of events.

Balances are recomputed through the domain's own aggregates, not through the
projections' code, so a bug in either shows up as a disagreement.

Besides the events and the views it checks what the service trusts without
replaying: every snapshot (loads start from them) must be the aggregate its
events make at that version, and what each paid Checkout session's refunds and
disputes took back must be what the rule (ledger/domain/adjustments.py) makes of
its facts, and what its account gave back.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import queue
import re
import struct
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import msgspec
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import StoredEvent

from audit.checkpoint import CheckpointAudit, CheckpointReplay
from audit.findings import Finding
from ledger import event_loop
from ledger.child_processes import end_with_parent, started_deaf_to_ctrl_c, stop_pool_now
from ledger.domain.account import MAX_GRANT, CreditAccount
from ledger.domain.account import on as account_evolution
from ledger.domain.adjustments import (
    DISPUTE_STAGE,
    REFUND_STAGE,
    Dispute,
    Refund,
    Worth,
    later_stage,
    taken_back,
)
from ledger.domain.checkout import MISMATCHED, CheckoutSession
from ledger.domain.checkout import on as checkout_evolution
from ledger.domain.events import (
    HOLD_SETTLEMENTS,
    STATEMENT_EVENTS,
    AccountEvent,
    CheckoutEvent,
    CheckoutPaid,
    CheckoutRequested,
    CreditsClawedBack,
    CreditsGranted,
    CreditsPurchased,
    CreditsRestored,
    CreditsReversed,
    CreditsSpent,
    DisputeClosed,
    DisputeUpdated,
    GrantExpired,
    GrantVoided,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldReleased,
    MonthlyAllowanceReset,
    PaymentDisputed,
    PaymentRefunded,
    RefundUpdated,
    low_balance_threshold,
)
from ledger.domain.grants import ACTIVE, EXPIRED, VOIDED, Grant
from ledger.domain.holds import OpenHold, repayable_by
from ledger.domain.limits import MAX_CREDITS, MIN_CREDITS
from ledger.domain.payment_intent import PaymentIntent
from ledger.domain.payment_intent import on as payment_intent_evolution
from ledger.handlers.hold_answers import Hold
from ledger.handlers.payments import LINK_SCOPE
from ledger.handlers.purchases import CheckoutStarted
from ledger.heap import BATCHES_YOUNG, settle_after_start_up
from ledger.store.claims import request_fingerprint
from ledger.store.event_store import (
    EVENT_COLUMNS,
    Connection,
    ReplayedEvent,
    events_of_part,
    stream_part,
)
from ledger.store.hash_chain import (
    GENESIS,
    length_prefixed,
    pack_fixed_fields,
    postgres_moment,
)
from ledger.store.mapper import FastDecode, MsgspecMapper, event_type_name, fast_decoder
from ledger.store.migrate import LOGIN_ROLES, packaged
from projections.balance_changes import DESCRIPTIONS
from projections.events import as_text, times_as_microseconds
from projections.grants import closed_at
from projections.runner import all_projections

CURSOR_PREFETCH = 5000
PROGRESS_SECONDS = 0.2
"""How often the workers' progress is passed on."""

_HOLD_STATUS: dict[type, str] = {
    HoldPlaced: "held",
    HoldCaptured: "captured",
    HoldReleased: "released",
    HoldExpired: "expired",
}
"""The holds view's status of a hold after each of its events."""
assert set(_HOLD_STATUS) == {HoldPlaced, *HOLD_SETTLEMENTS}

_HOLD_COLUMNS = (
    "stream_id",
    "amount",
    "captured",
    "released",
    "status",
    "reason",
    "expires_at",
    "placed_at",
    "settled_at",
)
_GRANT_COLUMNS = (
    "stream_id",
    "amount",
    "remaining",
    "priority",
    "expires_at",
    "reason",
    "status",
    "position",
    "granted_at",
    "closed_at",
)
assert _GRANT_COLUMNS[-3:] == ("position", "granted_at", "closed_at")  # _grant_row reads them so
_ViewRow = tuple[str, tuple[Any, ...], int]
"""A hold's or grant's row as the replay makes it: (account, the view's columns, position)."""
_MAY_OVERDRAW = (CreditsSpent, HoldPlaced)
"""Events refused by the domain when they would leave less than nothing available."""
_SETTLEMENT_NAMES: dict[type, tuple[str, ...]] = {
    HoldCaptured: (
        "from_allowance",
        "from_grants",
        "from_topup",
        "released",
        "lapsed",
        "grants_lapsed",
        "kept_spent",
        "kept_lapsed",
    ),
    HoldReleased: ("released", "lapsed", "grants_lapsed", "kept_lapsed"),
    HoldExpired: ("released", "lapsed", "grants_lapsed", "kept_lapsed"),
}
"""What a hold's settlement records of where its credits went, as ``Settlement`` names it."""
assert set(_SETTLEMENT_NAMES) == set(HOLD_SETTLEMENTS)
_SETTLEMENT_FIGURES = {kind: attrgetter(*names) for kind, names in _SETTLEMENT_NAMES.items()}
"""Each kind's figures as one tuple: compared whole first, named only when they differ."""
_TAKEN_BACK: dict[type, int] = {CreditsClawedBack: 1, CreditsReversed: 1, CreditsRestored: -1}
"""Account events that take a purchase's credits back (1) or give them back (-1)."""
_MOVED = ("credits_clawed_back", "credits_given_back", "credits_reversed", "credits_restored")
"""What a session's refunds and disputes moved, by kind, as its events name it: each is one
kind of account event (``_moved_by``), written with it (``ledger.handlers.payments._adjust``)."""
_MOVED_SAID = (
    "clawed back for refunds",
    "given back for failed refunds",
    "reversed for chargebacks",
    "restored after chargebacks",
)
_MOVES_CREDITS = frozenset(
    {PaymentRefunded, RefundUpdated, DisputeUpdated, PaymentDisputed, DisputeClosed}
)
"""The session events that may move credits (``_MOVED``)."""
_BEFORE_ADJUSTMENTS = (PaymentDisputed, DisputeClosed)
"""Dispute events of the first releases, decided by rules older than ledger/domain/adjustments.py."""
_GRANT_CLOSED: dict[type, str] = {GrantExpired: EXPIRED, GrantVoided: VOIDED}
_NOT_COMPARED = frozenset({"_pending_events"})
"""An aggregate's attributes a snapshot does not keep."""
_ACCOUNT_VIEWS = ("balances", "notifications", "statement")
"""The views with one row (or one balance) per account: their figures are kept per stream."""
_CLAIMED: dict[type, int] = {CreditsSpent: 0, HoldPlaced: 1, CreditsGranted: 2}
"""Account events each recorded with one claim of its command's Idempotency-Key (required),
by where they are counted: ``_CLAIM_SCOPES`` names those claims' scopes in the same order."""
_CLAIM_SCOPES = ("spend", "hold", "grant")
"""``<scope>/<account>``: ``spend_claim``, ``place_claim`` and ``grant_claim`` in
ledger/handlers."""
_SETTLEMENT_SCOPE = "hold-settlement/"
"""A hold's one settlement is claimed under its id (``settle_claim``, ``expiry_claim``)."""


class AuditedEvent(ReplayedEvent, frozen=True):
    """A stored event as the audit reads it: with, when the transaction that wrote it had not
    ended at the audit's snapshot, that transaction's id (``_HIDDEN_BY``)."""

    hidden_by: str | None = None


class HiddenEvent(msgspec.Struct, array_like=True, frozen=True):
    """An event readers in commit order pass over (``_HIDDEN_BY``)."""

    position: int
    stream_id: UUID
    version: int
    transaction_id: str


_HIDDEN_SHOWN = 10
"""Hidden events reported one by one; the rest are counted."""


class _Settled(msgspec.Struct, array_like=True, frozen=True):
    """What a hold's settlement recorded, as its claim's answer (``Hold``) tells it."""

    status: str
    captured: int
    released: int


_Applier = tuple[Any, Any]
_APPLIERS: dict[type, _Applier] = {}
"""Per event class, (aggregate class, method) where an event of it changes an aggregate of
exactly that class by that method alone (``_applier``), else (None, None): a plain dict, read
with ``get``."""


_REGISTRIES = (
    (CreditAccount, account_evolution),
    (CheckoutSession, checkout_evolution),
    (PaymentIntent, payment_intent_evolution),
)


def _applier(kind: type) -> _Applier:
    """``_APPLIERS``' entry of an event class not met before, kept: for an event whose
    ``mutate`` is the library's and whose ``apply`` only hands it to its aggregate's
    ``evolve``, where that ``evolve`` is its registry's own (``Evolution.evolve``, which
    calls the method registered for the event's class and does nothing else), that method
    and the aggregate class it is registered for."""
    applier: _Applier = (None, None)
    if (
        getattr(kind, "mutate", None) is CanMutateAggregate.mutate
        and getattr(kind, "apply", None) is AccountEvent.apply
    ):
        for aggregate_class, registry in _REGISTRIES:
            method = registry.method(kind)
            if method is not None and aggregate_class.evolve is registry.evolve:
                applier = (aggregate_class, method)
                break
    _APPLIERS[kind] = applier
    return applier


assert CheckoutEvent.apply is AccountEvent.apply  # one function, which evolve() alone follows

_Topic = tuple[bytes, FastDecode | None]
_TOPICS: dict[str, _Topic] = {}
"""Each topic (a store has a few dozen) as the hash chain hashes it, and its fast decoder
(``ledger.store.mapper``): a plain dict, read with ``get``, one lookup an event (a dict
subclass with ``__missing__`` is not specialised by CPython 3.11: ~200 instructions more a
lookup, and a ``functools.cache`` wrapper ~550)."""


def _topic(topic: str) -> _Topic:
    """``_TOPICS``' entry of a topic not met before, kept. A topic that names no class has
    no fast decoder: the general path raises for it, and the event is unreadable."""
    try:
        fast = fast_decoder(topic)
    except Exception:  # the general path raises it again: a finding
        fast = None
    _TOPICS[topic] = made = (length_prefixed(topic), fast)
    return made


_NO_LINES = hashlib.md5(b"").hexdigest()  # noqa: S324
_sha256 = hashlib.sha256
_pack_fixed_fields = pack_fixed_fields


class AccountAt(msgspec.Struct):
    """An account's figures at a projection's position."""

    monthly_allowance: int = 0
    allowance_remaining: int = 0
    topup_balance: int = 0
    granted: int = 0
    held: int = 0
    threshold: int | None = None
    period: str = ""
    statement_lines: int = 0
    balance: int = 0
    statement_digest: str = _NO_LINES
    next_monthly_allowance: int = 0
    stream_id: UUID | None = None

    @property
    def low_armed(self) -> bool:
        """Whether the alerts view should have a low-balance alert armed here: the notifier
        disarms it as it fires, below the threshold, and arms it again above it
        (``projections.notifications``), judging the account as the view's position left it."""
        return self.balance - self.held >= low_balance_threshold(
            self.monthly_allowance, self.threshold
        )

    @property
    def depleted_armed(self) -> bool:
        """The same for the alert of nothing available."""
        return self.balance - self.held > 0


class Stream:
    """What the audit keeps per stream while it replays."""

    __slots__ = (
        "aggregate",
        "at_balances",
        "at_notifications",
        "at_statement",
        "claimed",
        "first_position",
        "hash",
        "id",
        "id_bytes",
        "moved",
        "older_disputes",
        "paid_at",
        "purchase_status",
        "recorded_microseconds",
        "replayable",
        "requested_at",
        "settled",
        "snapshots",
        "statement_after",
        "statement_digest",
        "statement_lines",
        "updated_at",
        "version",
    )

    def __init__(self, stream_id: UUID, id_bytes: bytes, first_position: int) -> None:
        self.id = stream_id
        self.id_bytes = id_bytes
        """The id's 16 bytes: the replay's key for the stream, and what its hash chain hashes."""
        self.version = 0
        self.hash = GENESIS
        self.recorded_microseconds: int | None = None
        self.replayable = True
        """False after a version gap: the aggregate cannot take the later events."""
        self.first_position = first_position
        self.statement_lines = 0
        self.statement_digest: Any = None
        """The MD5 of its statement lines so far (``StreamReplay._check_event``), once it
        has one."""
        self.statement_after = (0, 0, 0)
        """The buckets (allowance, top-up, granted) after the stream's last statement line."""
        self.aggregate: Any = None
        self.at_balances: AccountAt | None = None
        self.at_notifications: AccountAt | None = None
        self.at_statement: AccountAt | None = None
        self.purchase_status: PurchaseAt | None = None
        self.paid_at: datetime | None = None
        """When a Checkout session's first CheckoutPaid was recorded."""
        self.requested_at: datetime | None = None
        """When its CheckoutRequested was (a purchase row's created_at)."""
        self.updated_at: datetime | None = None
        """When its last event that changed its purchase row was (``_changes_purchase``)."""
        self.snapshots: dict[int, StoredSnapshot] | None = None
        self.older_disputes = False
        self.moved = [0] * len(_MOVED)
        """A Checkout session's credits moved by its refunds and disputes, by kind
        (``_MOVED``)."""
        self.claimed = [0] * len(_CLAIM_SCOPES)
        """Its events counted by ``_CLAIMED``."""
        self.settled: dict[str, _Settled] | None = None
        """Each hold it settled: what its settlement claim should answer (``_check_claims``)."""


class PurchaseAt(msgspec.Struct, frozen=True):
    """A purchase's row as the purchases view should show it."""

    status: str
    needs_review: bool
    amount_refunded: int
    credits_clawed_back: int
    credits_reversed: int
    credits: int
    amount: int
    currency: str
    position: int
    """Its CheckoutRequested's, as created_at is that event's time."""
    created_at: datetime | None
    paid_at: datetime | None
    updated_at: datetime | None


class StoredSnapshot(msgspec.Struct, frozen=True):
    """A row of the snapshots table."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes
    event_recorded_at: datetime


class GivenBack(msgspec.Struct):
    """What the account events naming one Checkout session took back of it."""

    account_id: str
    credits: int
    position: int
    """The last such event's."""
    other_accounts: set[str] = msgspec.field(default_factory=set)
    first_position: int = 0
    """The first such event's: it names the account the others are compared with."""
    moved: list[int] = msgspec.field(default_factory=lambda: [0] * len(_MOVED))
    """The credits of each kind of those events (``_MOVED``)."""


class Report(msgspec.Struct):
    """The audit's outcome."""

    events: int
    streams: int
    accounts: int
    checkout_sessions: int
    snapshots: int
    seconds: float
    events_per_second: float
    jobs: int
    """The processes that replayed (``--jobs``, or its default for the store's size)."""
    projection_positions: dict[str, int]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.findings


class SessionAt(msgspec.Struct, frozen=True):
    """What the cross-stream checks need of one Checkout session after the replay."""

    stream_id: UUID
    session_id: str
    account_id: str
    credits: int
    paid: bool
    clawed_back: int
    reversed: int
    rule: Worth | None
    """What its refunds and disputes should take back by ledger/domain/adjustments.py;
    None for sessions disputed under the first releases' rules."""
    rounded_down: Worth | None = None
    """The same with the chargeback's share rounded down, as purchases disputed before it
    was rounded up were decided (None where the two agree)."""
    payment_intent: str | None = None
    checkout_url: str = ""
    amount_refunded: int = 0
    """The money refunded its events recorded."""
    refunded_by_facts: int = 0
    """The money refunded its facts give: the largest ``amount_refunded`` and its refunds
    by id (``refunded_money``), which the rule is judged on."""
    amount: int = 0
    largest_refunded: int = 0
    refunds: dict[str, Refund] = msgspec.field(default_factory=dict)
    disputes: dict[str, Dispute] = msgspec.field(default_factory=dict)
    """Its facts, against what its payment intent kept before the payment (``IntentAt``)."""
    moved: tuple[int, ...] = (0,) * len(_MOVED)
    """What its refunds and disputes moved, by kind (``_MOVED``)."""

    def took_by_a_rule(self) -> bool:
        """Whether it took back for refunds and for disputes what a rule the ledger decided
        by gives, each: a refund's credits recorded as a chargeback's, or the other way
        round, tell another story of the purchase on its row and its account's statement."""
        return any(
            (self.clawed_back, self.reversed) == (rule.refunded, rule.disputed)
            for rule in (self.rule, self.rounded_down)
            if rule is not None
        )


class IntentAt(msgspec.Struct, frozen=True):
    """What a payment intent's stream kept before its payment, and the session it links."""

    payment_intent: str
    session_id: str
    amount_refunded: int
    refunds: dict[str, Refund]
    disputes: dict[str, Dispute]


class Part(msgspec.Struct):
    """What replaying some of the streams leaves for the checks across streams.

    Small by design: with ``--jobs`` it crosses a process boundary. Per-event
    findings are final; the rest is keyed by session, account, hold or grant so
    that the parts of several processes merge (``merge_parts``).
    """

    events: int = 0
    streams: int = 0
    accounts: int = 0
    snapshots: int = 0
    findings: list[Finding] = msgspec.field(default_factory=list)
    credited: dict[str, list[tuple[str, int, int]]] = msgspec.field(default_factory=dict)
    """Each session's CreditsPurchased: (account, credits, position)."""
    taken_back: dict[str, GivenBack] = msgspec.field(default_factory=dict)
    sessions: list[SessionAt] = msgspec.field(default_factory=list)
    intents: list[IntentAt] = msgspec.field(default_factory=list)
    """The payment intents linked to a session that kept something before the payment."""
    figures: dict[str, dict[str, AccountAt]] = msgspec.field(default_factory=dict)
    """Each view's expected row per account, at the view's position."""
    purchase_rows: dict[str, tuple[str, PurchaseAt]] = msgspec.field(default_factory=dict)
    hold_status: dict[str, _ViewRow] = msgspec.field(default_factory=dict)
    """Each hold's (account, ``_HOLD_COLUMNS``, position of the event) at the holds view's
    position."""
    grant_rows: dict[str, _ViewRow] = msgspec.field(default_factory=dict)
    """Each grant's (account, ``_GRANT_COLUMNS``, position of the event) at the grants
    view's position."""
    stream_accounts: dict[UUID, str] = msgspec.field(default_factory=dict)
    """The account of each account stream, for the checkpoints' findings."""
    claimed: dict[str, list[int]] = msgspec.field(default_factory=dict)
    """Each account's events counted by ``_CLAIMED``, of accounts replayed to their end."""
    unreplayed: list[str] = msgspec.field(default_factory=list)
    """The accounts not replayed to their end (a version gap, an unreadable event): their
    claims are counted against nothing."""
    open_holds: list[tuple[str, str]] = msgspec.field(default_factory=list)
    """(account, hold id) of each hold open at the end, of accounts replayed to their end."""
    settled_holds: dict[str, dict[str, _Settled]] = msgspec.field(default_factory=dict)
    """Each hold settled, by account and hold id, of accounts replayed to their end."""
    voids: set[tuple[str, bytes]] = msgspec.field(default_factory=set)
    """(account, the fingerprint its void request had: ``void_claim``) of each GrantVoided."""
    checkpoints: list[CheckpointReplay] = msgspec.field(default_factory=list)
    hidden: list[HiddenEvent] = msgspec.field(default_factory=list)
    """The first ``_HIDDEN_SHOWN`` hidden events by position."""
    hidden_count: int = 0
    last_hidden: int = 0
    """The position of the last hidden event."""


class StreamReplay:
    """Replays streams through the domain's aggregates and checks each event.

    Every check here needs only the events of one stream, in order: the streams
    may be split over processes, each with a StreamReplay of its own.
    """

    def __init__(
        self,
        positions: dict[str, int],
        snapshots: dict[UUID, dict[int, StoredSnapshot]],
        checkpoints: Sequence[CheckpointReplay] = (),
    ) -> None:
        self.positions = positions
        self.snapshots = snapshots
        self.checkpoints = checkpoints
        self.mapper = MsgspecMapper()
        self.streams: dict[bytes, Stream] = {}
        """By the id's bytes: asyncpg's UUID hashes through an int it makes each time (~2,200
        instructions, 3 % of an event's replay), a new bytes object through 16 bytes."""
        self.findings: list[Finding] = []
        self.credited: dict[str, list[tuple[str, int, int]]] = {}
        self.hold_status: dict[str, _ViewRow] = {}
        self.grant_rows: dict[str, _ViewRow] = {}
        self.closed_grants: dict[tuple[UUID, str], str] = {}
        self.voids: set[tuple[str, bytes]] = set()
        self.taken_back: dict[str, GivenBack] = {}
        self.hidden: list[HiddenEvent] = []
        self.hidden_count = 0
        self.last_hidden = 0
        # Where each account view stands, and the Stream attribute keeping the figures it saw
        # (a view at 0 saw no stream). An event at or before the lowest of them is past none.
        self._account_views = [
            (at, f"at_{view}") for view in _ACCOUNT_VIEWS if (at := positions.get(view, 0)) > 0
        ]
        self._lowest_view_position = min((at for at, _ in self._account_views), default=2**63)
        self._statement_at = positions.get("statement", 0)

    def _find(self, kind: str, detail: str, stream: Stream | None, event: ReplayedEvent) -> None:
        self.findings.append(
            Finding(
                kind=kind,
                detail=detail,
                account_id=_account_of(stream.aggregate) if stream else None,
                stream_id=str(event.originator_id),
                version=event.originator_version,
                position=event.notification_id,
            )
        )

    def replay(self, event: AuditedEvent) -> None:
        """Replay and check one event; each stream's events come in position order."""
        if event.hidden_by is not None:
            self._hidden(event, event.hidden_by)
        id_bytes = event.originator_id.bytes
        stream = self.streams.get(id_bytes)
        if stream is None:
            stream = Stream(event.originator_id, id_bytes, event.notification_id)
            self.streams[id_bytes] = stream
            stream.snapshots = self.snapshots.pop(event.originator_id, None)
        elif event.notification_id > self._lowest_view_position and isinstance(
            stream.aggregate, CreditAccount
        ):
            self._freeze_figures_before(stream, event.notification_id)
        prefixed_topic, fast = _TOPICS.get(event.topic) or _topic(event.topic)
        previous_hash, previous_version = stream.hash, stream.version
        in_sequence = event.originator_version == previous_version + 1
        microseconds = event.microseconds
        previous_time, stream.recorded_microseconds = stream.recorded_microseconds, microseconds
        stream.version, stream.hash = event.originator_version, event.hash
        # event_hash_at(), written out: the id's bytes are the stream's, made once.
        expected = _sha256(
            b"".join(
                (
                    previous_hash,
                    _pack_fixed_fields(id_bytes, event.originator_version, microseconds),
                    prefixed_topic,
                    event.state,
                )
            )
        ).digest()
        for checkpoint in self.checkpoints:
            checkpoint.observe(event, expected)
        if not in_sequence:
            self._find(
                "version-gap",
                f"version {event.originator_version} follows version {previous_version}: "
                "events are missing or repeated"
                + ("; the stream's later events are not replayed" if stream.replayable else ""),
                stream,
                event,
            )
            stream.replayable = False
        replayed = None
        if stream.replayable:
            try:
                # The mapper's fast path called here, found with the topic (no cache wrapper,
                # no frame): the general path when it has none or does not fit.
                domain_event = None
                if fast is not None:
                    try:
                        domain_event = fast(
                            event.state, event.originator_id, event.originator_version
                        )
                    except msgspec.ValidationError:
                        domain_event = None  # the general path decides, and says what is wrong
                if domain_event is None:  # an older shape to upcast, or no fast path
                    domain_event = self.mapper.to_domain_event(event)
                kind = type(domain_event)
                if kind is MonthlyAllowanceReset:
                    self._check_reset(stream, event, domain_event)
                elif kind in _SETTLEMENT_FIGURES:
                    self._check_settlement(stream, event, domain_event)
                elif kind in _MAY_OVERDRAW:
                    stream.claimed[_CLAIMED[kind]] += 1  # counted here: no lookup for others
                    # A spend or a hold takes its amount from the buckets: no more, no less,
                    # none below 0. Written out here, not as sum() and min() of a list nor in
                    # a method of its own: a replay checks every spend.
                    allowance, topup = domain_event.from_allowance, domain_event.from_topup
                    grants, amount = domain_event.from_grants, domain_event.amount
                    if (
                        allowance + topup + (sum(grants.values()) if grants else 0) != amount
                        or allowance < 0
                        or topup < 0
                        or (grants and min(grants.values()) < 0)
                        or amount < 1
                    ):
                        self._check_taken(stream, event, domain_event)
                    if kind is HoldPlaced:
                        self._check_hold_is_new(stream, event, domain_event)
                elif kind is CheckoutPaid:
                    self._check_payment(stream, event, domain_event)
                elif kind is CreditsGranted:
                    self._check_grant(stream, event, domain_event)
                aggregate = stream.aggregate
                owner, method = _APPLIERS.get(kind) or _applier(kind)
                if type(aggregate) is owner:
                    # The library's mutate() without its two checks, which hold here: the
                    # aggregate is this stream's (by id) and at the version before this one
                    # (in_sequence, or the stream stopped replaying); and the method its
                    # evolve() calls: a frame less.
                    method(aggregate, domain_event)
                    aggregate._version = event.originator_version
                    aggregate._modified_on = domain_event.timestamp
                    replayed = aggregate
                else:  # an event that makes its aggregate, or is not this aggregate's
                    replayed = domain_event.mutate(aggregate)
            except Exception as error:  # a tampered row may not even decode
                # The aggregate stays before this event, so each later one would fail in
                # turn with the library's bare "(next version, last version)".
                self._find(
                    "unreadable",
                    f"cannot replay the event: {error}; the stream's later events are not replayed",
                    stream,
                    event,
                )
                stream.replayable = False
                replayed = None
            else:
                stream.aggregate = replayed
        if previous_time is not None and microseconds < previous_time:
            self._find(
                "recorded-out-of-order",
                f"recorded at {_when(event.recorded_at)}, before version {previous_version} "
                f"of its stream ({_when(postgres_moment(previous_time))}): appends record their "
                "time in order, so it was written into the stream's past (or the database "
                "server's clock stepped back)",
                stream,
                event,
            )
        if in_sequence and event.hash != expected:
            self._find(
                "hash-mismatch",
                f"{event_type_name(event.topic)} was changed after it was written: its "
                f"stored hash is {event.hash.hex()[:16]}…, its content hashes to "
                f"{expected.hex()[:16]}…",
                stream,
                event,
            )
        if replayed is not None:
            self._check_event(stream, event, domain_event, microseconds)
        snapshot = (
            stream.snapshots.pop(event.originator_version, None) if stream.snapshots else None
        )
        if snapshot is not None and replayed is not None:  # else reported as unreadable
            self._check_snapshot(stream, event, snapshot)

    def _hidden(self, event: ReplayedEvent, transaction_id: str) -> None:
        """Keep the first few hidden events (they come in position order) and count all."""
        self.hidden_count += 1
        self.last_hidden = event.notification_id
        if len(self.hidden) < _HIDDEN_SHOWN:
            self.hidden.append(
                HiddenEvent(
                    event.notification_id,
                    event.originator_id,
                    event.originator_version,
                    transaction_id,
                )
            )

    def _check_reset(
        self, stream: Stream, event: ReplayedEvent, reset: MonthlyAllowanceReset
    ) -> None:
        """A reset is of a period after the account's, to its plan's allowance, carries what
        open holds reserve of the allowance, and repays no more of a debt than the rule gives
        (an event recorded before the rule repaid nothing, which is less): more would be
        credits made from nothing. Judged on the account before it."""
        account = stream.aggregate
        if not isinstance(account, CreditAccount):
            return  # reported as unreadable, or a reset on another stream
        if reset.period <= account.period or reset.monthly_allowance != (
            account.next_monthly_allowance
        ):
            # The same period again changes nothing and an earlier one is refused: another
            # reset of it would give the allowance again. The allowance is the plan's.
            self._find(
                "reset-mismatch",
                f"the reset to {reset.period} set the allowance to {reset.monthly_allowance}; "
                f"the account before it was in {account.period} with a plan of "
                f"{account.next_monthly_allowance}: a reset is of a later period, to the plan",
                stream,
                event,
            )
        carried, debt_repaid, kept = account.reset_figures()
        if not reset.held_topup_kept:
            # Recorded before anything was kept for held top-ups, it repaid that instead.
            debt_repaid += kept
            kept = 0
        if (
            reset.held_allowance_carried != carried
            or reset.debt_repaid > debt_repaid
            or reset.held_topup_kept != kept
        ):
            self._find(
                "reset-mismatch",
                f"the reset carried {reset.held_allowance_carried}, repaid "
                f"{reset.debt_repaid} of a debt and kept {reset.held_topup_kept} for held "
                f"top-ups; the account before it gives {carried} carried, at most "
                f"{debt_repaid} repaid and {kept} kept",
                stream,
                event,
            )

    def _check_payment(self, stream: Stream, event: ReplayedEvent, paid: CheckoutPaid) -> None:
        """A session is paid once, of the amount it asked: ``CheckoutSession.pay`` records
        another amount as a mismatch, which credits nothing. Judged on the session before it."""
        session = stream.aggregate
        if not isinstance(session, CheckoutSession):
            return  # reported as unreadable, or a payment on another stream
        if session.settled or paid.amount_paid != session.amount:
            self._find(
                "purchase-mismatch",
                f"session {session.session_id} recorded paid with {paid.amount_paid} of the "
                f"{session.amount} it asked, while {session.status}: a session is paid once, of "
                "its amount (another amount is a mismatch, which credits nothing)",
                stream,
                event,
            )

    def _check_settlement(self, stream: Stream, event: ReplayedEvent, settled: Any) -> None:
        """A settlement parts its hold's credits as the rule does (``CreditAccount.settlement``):
        it spends no more than the hold kept and lets lapse only a carried allowance share and
        the shares of closed grants. Other figures are credits spent, given back or lapsed
        that the hold never kept. Judged on the account before it."""
        account = stream.aggregate
        if not isinstance(account, CreditAccount):
            return  # reported as unreadable, or a settlement on another stream
        if stream.settled is None:
            stream.settled = {}
        stream.settled.setdefault(
            settled.hold_id,
            _Settled(
                _HOLD_STATUS[type(settled)],
                settled.captured if isinstance(settled, HoldCaptured) else 0,
                settled.released,
            ),
        )
        hold = account.holds.get(settled.hold_id)
        captured = settled.captured if isinstance(settled, HoldCaptured) else 0
        if hold is None or not 0 <= captured <= hold.amount:
            kept = "is not open" if hold is None else f"keeps {hold.amount} credits"
            detail = f"captured {captured} of hold {settled.hold_id}, which {kept}"
        else:
            rule = account.settlement(settled.hold_id, captured)
            figures = _SETTLEMENT_FIGURES[type(settled)]
            # Recorded before the rule, a settlement repaid no debt, which is less; more
            # than the rule gives is credits made from nothing.
            repaid = 0 <= settled.debt_repaid <= rule.debt_repaid
            if repaid and figures(settled) == figures(rule):
                # The rule may be wrong too: what it gives must still part the hold's own
                # credits, each bucket's share once, judged without it.
                if problems := _unkept(account, hold, settled, captured):
                    status = _HOLD_STATUS[type(settled)]
                    self._find(
                        "settlement-unbalanced",
                        f"hold {settled.hold_id} {status}, as the rule gives, with "
                        f"{'; '.join(problems)}",
                        stream,
                        event,
                    )
                return
            wrong = [
                f"{name} {getattr(settled, name)!r} (the rule gives {getattr(rule, name)!r})"
                for name in _SETTLEMENT_NAMES[type(settled)]
                if getattr(settled, name) != getattr(rule, name)
            ]
            if not repaid:
                wrong.append(
                    f"debt_repaid {settled.debt_repaid} (the rule gives at most {rule.debt_repaid})"
                )
            status = _HOLD_STATUS[type(settled)]
            detail = f"hold {settled.hold_id} {status} with {', '.join(wrong)}"
        self._find("settlement-mismatch", detail, stream, event)

    def _check_taken(self, stream: Stream, event: ReplayedEvent, taken: Any) -> None:
        """A spend or a hold of less than 1 credit (``CreditAccount._split`` refuses it, as
        it did since the first spend was recorded), or whose parts do not add up to its
        amount, or one below 0."""
        what = "hold" if isinstance(taken, HoldPlaced) else "spend"
        if taken.amount < 1:
            self._find(
                "invalid-amount",
                f"a {what} of {taken.amount} credits: the account records spends and holds "
                "of at least 1",
                stream,
                event,
            )
        grants = taken.from_grants
        if (
            taken.from_allowance + taken.from_topup + sum(grants.values()) == taken.amount
            and min(taken.from_allowance, taken.from_topup, *grants.values()) >= 0
        ):
            return
        self._find(
            "split-mismatch",
            f"a {what} of {taken.amount} took {taken.from_allowance} from the allowance, "
            f"{taken.from_grants!r} from grants and {taken.from_topup} from top-ups",
            stream,
            event,
        )

    def _check_hold_is_new(self, stream: Stream, event: ReplayedEvent, placed: HoldPlaced) -> None:
        """A hold is placed once. Placed again while open, the account forgets what the first
        reserved, with no capture, release or expiry to say where it went. A settled one is
        never placed again: its id follows from its request's key (``hold_id_for``; random
        before), which is claimed once, and its settlement's claim would answer the new
        hold's capture, release and expiry, which would keep its credits for good."""
        account = stream.aggregate
        if not isinstance(account, CreditAccount):
            return
        if open_hold := account.holds.get(placed.hold_id):
            self._find(
                "hold-placed-twice",
                f"hold {placed.hold_id} was placed while it was open, reserving "
                f"{open_hold.amount}: that reservation ends without a settlement",
                stream,
                event,
            )
        elif stream.settled and (settled := stream.settled.get(placed.hold_id)):
            self._find(
                "hold-placed-twice",
                f"hold {placed.hold_id} was placed again after it was {settled.status}: a "
                "settled hold is not placed again, and its settlement's claim answers this "
                "one's capture, release and expiry",
                stream,
                event,
            )

    def _check_grant(self, stream: Stream, event: ReplayedEvent, granted: CreditsGranted) -> None:
        """A grant is of 1 to ``MAX_GRANT`` credits, and its id is granted once
        (``CreditAccount.grant`` refuses other amounts, as it did since grants were first
        recorded, and an id the account has, open or closed): granted again, the grant
        starts over from the new amount, and what the first had left stays in ``granted``,
        where no grant holds it, nor spends it."""
        if not 1 <= granted.amount <= MAX_GRANT:
            self._find(
                "invalid-amount",
                f"grant {granted.grant_id} of {granted.amount} credits: a grant is 1 to "
                f"{MAX_GRANT:,} credits",
                stream,
                event,
            )
        account = stream.aggregate
        if isinstance(account, CreditAccount) and (
            granted.grant_id in account.grants or granted.grant_id in account.closed_grants
        ):
            grant = account.grants.get(granted.grant_id)
            state = "closed" if grant is None else f"{grant.status} with {grant.remaining} left"
            self._find(
                "grant-granted-twice",
                f"grant {granted.grant_id} was granted {granted.amount} again while {state}",
                stream,
                event,
            )

    def _check_event(
        self, stream: Stream, event: ReplayedEvent, domain_event: Any, microseconds: int
    ) -> None:
        aggregate = stream.aggregate
        kind = type(domain_event)
        if isinstance(aggregate, CreditAccount):
            # Of the allowance, what open holds reserve (and resets kept for them) is not free:
            # a spend or hold recorded as taking it, parts adding up and credits to spare, made
            # credits (the reset carries the share whole). ``free_allowance``, written out,
            # and only with holds open (resets keep nothing for held top-ups but while they
            # are): most accounts have none, and a replay checks every event.
            remaining = aggregate.allowance_remaining
            reserved = (
                aggregate.kept_for_holds + aggregate.held_totals.from_allowance
                if aggregate.holds
                else 0
            )
            if remaining < reserved:
                self._find(
                    "negative-allowance",
                    f"allowance {remaining}"
                    + (f", of which open holds reserve {reserved}" if reserved else ""),
                    stream,
                    event,
                )
            if kind in _MAY_OVERDRAW and aggregate.available < 0:
                self._find(
                    "overdrawn",
                    f"a {'hold' if kind is HoldPlaced else 'spend'} left {aggregate.available} "
                    "credits available",
                    stream,
                    event,
                )
            grants_of = _GRANTS_TOUCHED.get(kind)
            if grants_of is not None and (touched := grants_of(domain_event)):
                self._check_grants(stream, event, domain_event, touched)
            if kind in _HOLD_STATUS and event.notification_id <= self.positions.get("holds", 0):
                self._hold_row(aggregate.account_id, event, domain_event)
            if kind is CreditsPurchased:
                self.credited.setdefault(domain_event.session_id, []).append(
                    (aggregate.account_id, domain_event.credits, event.notification_id)
                )
            elif kind in _TAKEN_BACK:
                self._account_took_back(aggregate.account_id, domain_event, event)
            head = _LINE_HEADS.get(kind)  # one of STATEMENT_EVENTS
            if head is not None and event.notification_id <= self._statement_at:
                # The statement line the event makes (its buckets are the account's after
                # it), in bytes as ``_STATEMENT_DIGESTS`` packs the view's; written out here,
                # not a function of its own: nearly every event makes one.
                stream.statement_lines += 1
                a0, t0, g0 = stream.statement_after
                a1, t1, g1 = stream.statement_after = (
                    aggregate.allowance_remaining,
                    aggregate.topup_balance,
                    aggregate.granted,
                )
                da, dt, dg = a1 - a0, t1 - t0, g1 - g0
                pack, name, describe = head
                description = as_text(describe(domain_event))  # description_of(), written out
                try:
                    line = (
                        pack(
                            event.notification_id,
                            event.originator_version,
                            da + dt + dg,
                            da,
                            dt,
                            dg,
                            a1,
                            t1,
                            g1,
                            a1 + t1 + g1,
                            microseconds,
                            name,
                            len(description),
                        )
                        + description.encode()
                    )
                except struct.error:  # a number past a bigint, which no view's line holds
                    self._find(
                        "statement-view",
                        f"its statement line holds a number past a bigint ({da + dt + dg} "
                        f"changed, {a1 + t1 + g1} after), which the view at position "
                        f"{self._statement_at} cannot hold",
                        stream,
                        event,
                    )
                    line = b"a line no view holds"
                if stream.statement_digest is None:
                    stream.statement_digest = hashlib.md5(line)  # noqa: S324 (a digest, not a seal)
                else:
                    stream.statement_digest.update(line)
        elif isinstance(aggregate, CheckoutSession):
            if kind in _BEFORE_ADJUSTMENTS:
                stream.older_disputes = True
            if kind in _MOVES_CREDITS:
                for n, moved in enumerate(_MOVED):
                    stream.moved[n] += getattr(domain_event, moved, 0)
            if kind is CheckoutRequested:
                stream.requested_at = event.recorded_at
                if not MIN_CREDITS <= domain_event.credits <= MAX_CREDITS:
                    self._check_credits(stream, event, domain_event)
            elif kind is CheckoutPaid and stream.paid_at is None:
                stream.paid_at = event.recorded_at
            if _changes_purchase(domain_event):
                stream.updated_at = event.recorded_at
            if event.notification_id <= self.positions.get("purchases", 0):
                stream.purchase_status = _purchase_at(aggregate, stream)

    def _check_credits(
        self, stream: Stream, event: ReplayedEvent, requested: CheckoutRequested
    ) -> None:
        """A session requested by the service is of ``MIN_CREDITS`` to ``MAX_CREDITS``
        (refused before Stripe is asked, since the first session was recorded); one rebuilt
        from a paid session's metadata (``recovered``) of 1 or more. A version 1 event reads
        as requested, its upcast setting ``recovered`` false also of sessions recovered before
        version 2 kept the flag: it is held to 1 or more."""
        credits = requested.credits
        if requested.recovered or _stored_version(event.state) < 2:
            if credits >= 1:
                return
            rule = "a session is of 1 credit or more, requested or rebuilt from its metadata"
        else:
            rule = f"a purchase is {MIN_CREDITS} to {MAX_CREDITS:,} credits"
        how = "rebuilt from its metadata" if requested.recovered else "requested"
        self._find(
            "purchase-mismatch",
            f"session {requested.session_id} was {how} for {credits} credits: {rule}",
            stream,
            event,
        )

    def _check_grants(
        self, stream: Stream, event: ReplayedEvent, domain_event: Any, touched: Collection[str]
    ) -> None:
        """Grants close once, never after their expiry is used, and never go below zero."""
        account: CreditAccount = stream.aggregate
        kind = type(domain_event)
        if kind is CreditsGranted:
            stream.claimed[_CLAIMED[kind]] += 1
        closing = _GRANT_CLOSED.get(kind)
        if closing is not None:
            key = (event.originator_id, domain_event.grant_id)
            if key in self.closed_grants:
                self._find(
                    "grant-closed-twice",
                    f"grant {domain_event.grant_id} was already {self.closed_grants[key]}",
                    stream,
                    event,
                )
            self.closed_grants[key] = closing
            if kind is GrantVoided:
                self.voids.add(
                    (
                        account.account_id,
                        request_fingerprint(
                            {"grant_id": domain_event.grant_id, "reason": domain_event.reason}
                        ),
                    )
                )
            grant = account.grants.get(domain_event.grant_id)
            if kind is GrantExpired and grant and not grant.has_expired(domain_event.timestamp):
                self._find(
                    "grant-expired-early",
                    f"grant {domain_event.grant_id} expires at {_when(grant.expires_at)}, its expiry "
                    f"was recorded at {domain_event.timestamp.isoformat()}",
                    stream,
                    event,
                )
        if kind in _MAY_OVERDRAW:
            for grant_id in domain_event.from_grants:
                grant = account.grants.get(grant_id)
                if grant is None or grant.status != ACTIVE:
                    self._find(
                        "closed-grant-used",
                        f"took from grant {grant_id} after it had expired or been voided",
                        stream,
                        event,
                    )
                elif grant.has_expired(domain_event.timestamp):
                    self._find(
                        "expired-grant-used",
                        f"took from grant {grant_id} at {domain_event.timestamp.isoformat()}, "
                        f"past its expiry ({_when(grant.expires_at)})",
                        stream,
                        event,
                    )
        for grant_id in touched:
            grant = account.grants.get(grant_id)
            if grant is not None and (free := account.free_of_grant(grant_id)) != 0:
                if free < 0:
                    self._find(
                        "grant-overdrawn",
                        f"took more than grant {grant_id} had: {free} of it left",
                        stream,
                        event,
                    )
                elif closing is not None:
                    # Judged on the account alone, not on what the close says lapsed: a
                    # closed grant keeps only what open holds reserve (_unkept, as they settle).
                    self._find(
                        "closed-grant-balance",
                        f"grant {grant_id} is {grant.status} and keeps {free} credits no open "
                        "hold reserves: they should have lapsed",
                        stream,
                        event,
                    )
            if event.notification_id <= self.positions.get("grants", 0):
                self._grant_row(account.account_id, event, kind, grant_id, grant)

    def _hold_row(self, account_id: str, event: ReplayedEvent, domain_event: Any) -> None:
        """The hold's row after one of its events, as the holds view should show it."""
        hold_id, status = domain_event.hold_id, _HOLD_STATUS[type(domain_event)]
        if isinstance(domain_event, HoldPlaced):
            values: tuple[Any, ...] = (
                event.originator_id,
                domain_event.amount,
                0,
                0,
                status,
                as_text(domain_event.reason),
                datetime.fromisoformat(domain_event.expires_at),
                event.recorded_at,
                None,
            )
        else:
            placed = self.hold_status.get(hold_id)
            stream_id, amount, _, _, _, reason, expires_at, placed_at, _ = (
                placed[1]
                if placed
                else (event.originator_id, None, 0, 0, "", None, None, None, None)
            )
            captured = domain_event.captured if isinstance(domain_event, HoldCaptured) else 0
            values = (
                stream_id,
                amount,
                captured,
                domain_event.released,
                status,
                reason,
                expires_at,
                placed_at,
                event.recorded_at,
            )
        self.hold_status[hold_id] = (account_id, values, event.notification_id)

    def _grant_row(
        self, account_id: str, event: ReplayedEvent, kind: type, grant_id: str, grant: Grant | None
    ) -> None:
        """The grant's row after an event that moved or closed it, as the grants view
        should show it: granted at its CreditsGranted's time, closed at its GrantVoided's, or
        at its expires_at for a GrantExpired (``projections.grants.closed_at``)."""
        known = self.grant_rows.get(grant_id)
        # The row's position is its CreditsGranted's (lists page on it), as granted_at is.
        granted, granted_at, closed = (
            known[1][-3:] if known else (event.notification_id, event.recorded_at, None)
        )
        if kind in _GRANT_CLOSED:
            expires_at = grant.expires_at if grant is not None else known[1][4] if known else None
            closed = closed_at(kind, expires_at, event.recorded_at)
        if grant is not None:
            values: tuple[Any, ...] = (
                event.originator_id,
                grant.amount,
                grant.remaining,
                grant.priority,
                grant.expires_at,
                as_text(grant.reason),
                grant.status,
                granted,
                granted_at,
                closed,
            )
        else:  # closed, and no longer on the account
            stream_id, amount, _, priority, expires_at, reason, *_ = (
                known[1] if known else (event.originator_id, None, 0, None, None, None, None)
            )
            status = self.closed_grants.get((event.originator_id, grant_id), "closed")
            values = (
                stream_id,
                amount,
                0,
                priority,
                expires_at,
                reason,
                status,
                granted,
                granted_at,
                closed,
            )
        self.grant_rows[grant_id] = (account_id, values, event.notification_id)

    def _account_took_back(self, account_id: str, domain_event: Any, event: ReplayedEvent) -> None:
        credits = _TAKEN_BACK[type(domain_event)] * domain_event.credits
        known = self.taken_back.get(domain_event.session_id)
        if known is None:
            known = GivenBack(
                account_id, 0, event.notification_id, first_position=event.notification_id
            )
            self.taken_back[domain_event.session_id] = known
        elif known.account_id != account_id:
            known.other_accounts.add(account_id)
        known.credits += credits
        known.moved[_moved_by(domain_event)] += domain_event.credits
        known.position = event.notification_id

    def _freeze_figures_before(self, stream: Stream, position: int) -> None:
        """Keep an account's figures as a view saw them: before its first event past the view.

        Figures are taken only where a view's position falls inside a stream;
        streams a view has read entirely get theirs from the final state, once.
        """
        for at, attribute in self._account_views:
            if stream.first_position <= at < position and getattr(stream, attribute) is None:
                setattr(stream, attribute, _figures(stream))

    def _final_figures(self) -> None:
        for stream in self.streams.values():
            if isinstance(stream.aggregate, CreditAccount):
                self._freeze_figures_before(stream, position=2**63)

    def _check_snapshot(
        self, stream: Stream, event: ReplayedEvent, snapshot: StoredSnapshot
    ) -> None:
        """A snapshot is what the stream's events make at its version, decoded as loads do."""
        try:
            stored = StoredEvent(
                originator_id=snapshot.originator_id,
                originator_version=snapshot.originator_version,
                topic=snapshot.topic,
                state=snapshot.state,
            )
            loaded = self.mapper.to_domain_event(stored).mutate(None)
            if isinstance(loaded, CreditAccount):
                _excuse_less_repayable(loaded, stream.aggregate)
            problems = _differences(loaded, stream.aggregate)
        except Exception as error:  # a forged snapshot may not even decode
            problems = [f"cannot be read: {error}"]
        if snapshot.event_recorded_at < event.recorded_at:
            # Loads "as of" a moment start from a snapshot recorded before it: one that
            # claims to be older than its last event would bring that event into the past.
            problems.append(
                f"says it was taken at {snapshot.event_recorded_at.isoformat()}, before its "
                f"last event was recorded ({event.recorded_at.isoformat()})"
            )
        for problem in problems:
            self._find(
                "snapshot-mismatch",
                f"the snapshot at version {snapshot.originator_version} {problem}",
                stream,
                event,
            )

    def _check_snapshots_left(self) -> None:
        """Snapshots of versions no event reached, or of streams with no events."""
        for stream in self.streams.values():
            for version in sorted(stream.snapshots or ()):
                self.findings.append(
                    Finding(
                        kind="snapshot-mismatch",
                        account_id=_account_of(stream.aggregate),
                        stream_id=str(stream.id),
                        version=version,
                        detail=f"a snapshot at version {version}, which the stream never "
                        f"reached (it ends at version {stream.version})",
                    )
                )
        for stream_id, snapshots in self.snapshots.items():
            for version in sorted(snapshots):
                self.findings.append(
                    Finding(
                        kind="snapshot-mismatch",
                        stream_id=str(stream_id),
                        version=version,
                        detail=f"a snapshot at version {version} of a stream with no events",
                    )
                )

    def result(self, events: int, snapshots: int) -> Part:
        """What the checks across streams need, once every event of these streams is replayed."""
        self._final_figures()
        self._check_snapshots_left()
        streams = self.streams.values()
        accounts = [s for s in streams if isinstance(s.aggregate, CreditAccount)]
        return Part(
            events=events,
            streams=len(self.streams),
            accounts=len(accounts),
            snapshots=snapshots,
            findings=self.findings,
            credited=self.credited,
            taken_back=self.taken_back,
            sessions=[
                _session_at(s.id, s) for s in streams if isinstance(s.aggregate, CheckoutSession)
            ],
            intents=[
                at
                for s in streams
                if isinstance(s.aggregate, PaymentIntent)
                and (at := _intent_at(s.aggregate)) is not None
            ],
            figures={
                view: {
                    s.aggregate.account_id: at
                    for s in accounts
                    if (at := getattr(s, f"at_{view}")) is not None
                }
                for view in _ACCOUNT_VIEWS
            },
            purchase_rows={
                s.aggregate.session_id: (s.aggregate.account_id, s.purchase_status)
                for s in streams
                if s.purchase_status is not None
            },
            hold_status=self.hold_status,
            grant_rows=self.grant_rows,
            stream_accounts=(
                {
                    s.id: s.aggregate.account_id
                    for s in streams
                    if isinstance(s.aggregate, CreditAccount)
                }
                if self.checkpoints
                else {}
            ),
            checkpoints=list(self.checkpoints),
            claimed={s.aggregate.account_id: s.claimed for s in accounts if s.replayable},
            unreplayed=[s.aggregate.account_id for s in accounts if not s.replayable],
            open_holds=[
                (s.aggregate.account_id, hold_id)
                for s in accounts
                if s.replayable
                for hold_id in s.aggregate.holds
            ],
            settled_holds={
                s.aggregate.account_id: s.settled for s in accounts if s.replayable and s.settled
            },
            voids=self.voids,
            hidden=self.hidden,
            hidden_count=self.hidden_count,
            last_hidden=self.last_hidden,
        )


_APPEND_ONLY = ("stored_events", "snapshots", "claims")
"""History: each with its two triggers, ``<table>_no_update_or_delete`` and ``_no_truncate``
(ledger/store/migrations: 0001, 0012, 0021)."""

# Each trigger missing, not firing in every ordinary session ('O': origin and local, 'A':
# always; 'D' is disabled, 'R' fires only in replica mode), calling another function, on
# other operations, or only on some rows (a WHEN condition) or columns (UPDATE OF); the
# function itself changed, so that it lets every change through under the same name; each
# write the service's role may make on history, also on some columns only, or by acting as
# the tables' owner. The trigger types' bits: 1 row, 2 before, 8 delete, 16 update, 32 truncate.
_PROTECTIONS = """
    SELECT table_name || '.' || suffix AS name,
           CASE WHEN t.tgenabled IS NULL THEN 'the append-only trigger is missing'
                WHEN t.tgenabled NOT IN ('O', 'A') THEN 'the append-only trigger does not fire'
                WHEN t.tgqual IS NOT NULL OR cardinality(t.tgattr::int2[]) > 0
                    THEN 'the append-only trigger fires only on some rows or columns'
                ELSE 'the append-only trigger is not what the migrations made' END AS problem
    FROM unnest($1::text[]) AS table_name
    CROSS JOIN (VALUES ('no_update_or_delete', 27), ('no_truncate', 34)) AS kind(suffix, bits)
    LEFT JOIN pg_trigger t ON t.tgname = table_name || '_' || suffix
        AND t.tgrelid = to_regclass('public.' || table_name)
    WHERE t.tgenabled IS NULL OR t.tgenabled NOT IN ('O', 'A')
       OR t.tgfoid IS DISTINCT FROM to_regproc('public.stored_events_are_append_only')
       OR t.tgtype::int & 59 <> bits
       OR t.tgqual IS NOT NULL OR cardinality(t.tgattr::int2[]) > 0
    UNION ALL
    SELECT 'stored_events_are_append_only()',
           'the function of the append-only triggers is not what the migrations made'
    WHERE (SELECT prosrc FROM pg_proc
           WHERE oid = to_regproc('public.stored_events_are_append_only')) IS DISTINCT FROM $3
    UNION ALL
    SELECT table_name, format('the role %s may %s', role, privilege)
    FROM unnest($1::text[]) AS table_name
    CROSS JOIN unnest($2::text[]) AS role
    CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS privilege
    WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
      AND CASE WHEN privilege IN ('INSERT', 'UPDATE')
               THEN has_any_column_privilege(role, 'public.' || table_name, privilege)
               ELSE has_table_privilege(role, 'public.' || table_name, privilege) END
    UNION ALL
    SELECT table_name, format('the role %s may act as its owner, %s', role,
                              pg_get_userbyid(c.relowner))
    FROM unnest($1::text[]) AS table_name
    CROSS JOIN unnest($2::text[]) AS role
    JOIN pg_class c ON c.oid = to_regclass('public.' || table_name)
    WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
      AND pg_has_role(role, c.relowner, 'MEMBER')
    UNION ALL
    SELECT 'database ' || d.datname, format('the role %s may drop it as its owner, %s',
                                            role, pg_get_userbyid(d.datdba))
    FROM pg_database d
    CROSS JOIN unnest($2::text[]) AS role
    WHERE d.datname = current_database() AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
      AND pg_has_role(role, d.datdba, 'MEMBER')
    ORDER BY 1, 2"""
_APPEND_ONLY_BODY = packaged("sql/functions/10_append_only.sql").split("$$")[1]
"""The append-only triggers' function body as the migrations make it (``prosrc``)."""

# A relay's position (projection_positions' rows named 'relay:…') is written only by the
# relay's functions, as the owner: row security keeps every other role to the views' rows
# (migration 0030). Each way round it: row security off, its policies other than the
# migration made them (a permissive one more opens what the others close), a login role
# that may TRUNCATE the table (row security does not stop it) or bypasses row security.
_NOT_A_RELAY = "(NOT starts_with(name, 'relay:'::text))"
"""The policy's expression, as PostgreSQL shows it (``pg_get_expr``)."""
_RELAY_POSITION_PROTECTIONS = """
    SELECT 'projection_positions' AS name,
           'row security, which keeps the relay''s position to its own functions, is off'
               AS problem
    FROM pg_class WHERE oid = to_regclass('public.projection_positions') AND NOT relrowsecurity
    UNION ALL
    SELECT 'projection_positions', format('the row security policy %s is %s', polname,
        CASE WHEN m.cmd IS NULL THEN 'not one the migrations made'
             WHEN p.polcmd IS NULL THEN 'missing'
             ELSE 'not what the migrations made' END)
    FROM (SELECT polname::text, polcmd, polpermissive, polroles,
                 pg_get_expr(polqual, polrelid) AS qual,
                 pg_get_expr(polwithcheck, polrelid) AS checked
          FROM pg_policy WHERE polrelid = to_regclass('public.projection_positions')) AS p
    FULL JOIN (VALUES ('positions_read', 'r'::"char", 'true', NULL),
                      ('views_positions_written', '*'::"char", $2::text, $2::text))
        AS m(polname, cmd, qual, checked) USING (polname)
    WHERE p.polcmd IS DISTINCT FROM m.cmd OR p.polpermissive IS NOT TRUE
       OR p.polroles IS DISTINCT FROM '{0}'::oid[]
       OR p.qual IS DISTINCT FROM m.qual OR p.checked IS DISTINCT FROM m.checked
    UNION ALL
    SELECT 'projection_positions', format('the role %s may TRUNCATE', role)
    FROM unnest($1::text[]) AS role
    WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
      AND has_table_privilege(role, 'public.projection_positions', 'TRUNCATE')
    UNION ALL
    SELECT 'projection_positions', format('the role %s bypasses row security', rolname)
    FROM pg_roles WHERE rolname = any($1::text[]) AND rolbypassrls
    ORDER BY 1, 2"""

# Readers in commit order pass an event only once its transaction_id is older than every
# transaction still running (VISIBLE in ledger/store/event_store.py), and the hash chain
# does not cover that column: an event this snapshot sees was committed, so an id it does
# not see as ended is one the event was never written by, and the feeds, the account
# histories and the projector pass over the event (all but the first few, and how many).
# Read with each event by the replay (a column that is NULL but for such an event), not by a
# query of its own: that was one more read of the whole table. The snapshot is taken once
# (an InitPlan), not made again for each row.
_HIDDEN_BY = """CASE WHEN pg_visible_in_snapshot(transaction_id, (SELECT pg_current_snapshot()))
    THEN NULL ELSE transaction_id::text END"""
_AUDITED_COLUMNS = f"{EVENT_COLUMNS}, {_HIDDEN_BY}"
"""The columns of an ``AuditedEvent`` (read as ``EVENT_COLUMNS`` are)."""

# The account a hidden event's stream belongs to: the one its first event names.
_STREAM_ACCOUNTS = """
    SELECT originator_id, event_account_id(state) AS account_id FROM stored_events
    WHERE originator_id = any($1::uuid[]) AND originator_version = 1"""

# Each account's line count, and the MD5 of its lines in order: each line's numbers as
# 8-byte big-endian integers (the time as PostgreSQL keeps it, microseconds since 2000),
# then its type (an ASCII class name, as the hash chain prefixes a topic) and description,
# each after its length in characters, in UTF-8
# (``_check_event`` packs the replay's so). Bytes, not text: PostgreSQL's cost is the
# same (~1 s of CPU for 1,000,000 lines; the line count and last balance this replaced took
# 0.25 s), and the replay packs a line in half the time it formatted one.
_STATEMENT_DIGESTS = """
    SELECT account_id, count(*) AS lines,
           md5(string_agg(int8send(position) || int8send(version) || int8send(amount)
                   || int8send(allowance_change) || int8send(topup_change)
                   || int8send(granted_change) || int8send(allowance_after)
                   || int8send(topup_after) || int8send(granted_after)
                   || int8send(balance_after) || timestamptz_send(recorded_at)
                   || int4send(length(type)) || convert_to(type, 'UTF8')
                   || int4send(length(description)) || convert_to(description, 'UTF8'),
               ''::bytea ORDER BY position)) AS digest
    FROM statement_lines GROUP BY account_id"""

# What each view holds that the replay is compared with, read once per run.
_VIEW_QUERIES = {
    "balances": """SELECT account_id, monthly_allowance, allowance_remaining, topup_balance,
                          held, period, granted, next_monthly_allowance, stream_id
                   FROM balances""",
    "notifications": """SELECT account_id, monthly_allowance, allowance_remaining,
                               topup_balance, held, threshold, granted, stream_id, low_armed,
                               depleted_armed
                        FROM notifier_accounts""",
    "purchases": f"""SELECT session_id, account_id, {", ".join(PurchaseAt.__struct_fields__)}
                     FROM purchases""",
    "statement": _STATEMENT_DIGESTS,
    "holds": f"SELECT hold_id, {', '.join(_HOLD_COLUMNS)} FROM holds",
    "grants": f"SELECT grant_id, {', '.join(_GRANT_COLUMNS)} FROM grants",
}

# How many claims each account's spends, holds and grants made (one each: _CLAIMED). A claim
# carries no hash and no position: one deleted lets a retry of its key be recorded again (a
# second spend), one inserted answers its key's request without recording it.
# With them, in the same pass over the table (a million spends' claims are some 400 MB), each
# purchase's answer and each void's request (``_check_purchase_answers``, voids): few, and
# their keys optional.
_KEPT = "scope LIKE 'purchase/%' OR scope LIKE 'void/%'"
_CLAIMS_READ = f"""
    SELECT scope, count(*) AS claims,
           array_agg(key) FILTER (WHERE {_KEPT}) AS keys,
           array_agg(CASE WHEN scope LIKE 'void/%' THEN request_hash ELSE response END)
               FILTER (WHERE {_KEPT}) AS kept
    FROM claims
    WHERE {" OR ".join(f"scope LIKE '{scope}/%'" for scope in _CLAIM_SCOPES)} OR {_KEPT}
    GROUP BY scope"""

# Every hold's settlement claim, with its answer, read row by row (one a hold settled: not
# gathered into one array per account as the few above are, where a busy account's would
# outgrow what one value may hold). Each must answer its hold's settlement as recorded.
_SETTLEMENT_CLAIMS_READ = f"""
    SELECT scope, key, response FROM claims WHERE scope LIKE '{_SETTLEMENT_SCOPE}%'"""


class Verifier:
    """One audit run over one consistent snapshot of the database.

    With ``jobs`` > 1 the streams are split over that many worker processes by a
    hash of their id; each reads this transaction's snapshot through a connection
    of its own to ``database_url``. Whatever needs more than one stream (purchases
    against sessions, what accounts took back, checkpoints, the views) is checked
    here, once the parts are merged.
    """

    def __init__(
        self,
        connection: Connection,
        checkpoints: Sequence[CheckpointAudit] = (),
        *,
        jobs: int = 1,
        database_url: str | None = None,
    ) -> None:
        if jobs > 1 and database_url is None:
            raise ValueError("replaying with more than one job needs the database's URL")
        self.connection = connection
        self.checkpoints = checkpoints
        self.jobs = jobs
        self.database_url = database_url
        self.findings: list[Finding] = []
        self.positions: dict[str, int] = {}
        self.views: dict[str, list[asyncpg.Record]] = {}
        self.links: list[asyncpg.Record] = []
        self.claim_counts: list[asyncpg.Record] = []
        self.purchase_claims: list[tuple[str, str, bytes]] = []
        """(scope, key, answer) of each purchase's claim."""
        self.void_claims: list[tuple[str, str, bytes]] = []
        """(scope, key, request fingerprint) of each void's claim."""
        self.settlement_claims: list[tuple[str, str, _Settled | None]] = []
        """(account, hold id, what its answer tells, None if it cannot be read) of each hold's
        settlement claim."""

    async def run(self, on_progress: Callable[[int], None] = lambda _: None) -> Report:
        """Replay, check, compare; ``on_progress(n)`` after every n events."""
        started = time.perf_counter()
        rows = await self.connection.fetch("SELECT name, position FROM projection_positions")
        self.positions = {r["name"]: r["position"] for r in rows}
        await self._check_positions()
        await self._check_protections()
        if self.jobs == 1:
            replays = [c.replay.empty_copy() for c in self.checkpoints]
            parts = [await replay_part(self.connection, self.positions, replays, on_progress)]
            await self._read_views()
        else:
            parts = await self._replay_in_workers(on_progress)
        part = merge_parts(parts)
        self.findings.extend(part.findings)
        for checkpoint, replayed in zip(self.checkpoints, part.checkpoints, strict=True):
            checkpoint.replay.merge(replayed)
            self.findings.extend(checkpoint.findings(part.stream_accounts.get))
        await self._check_hidden_events(part)
        self._check_purchases(part)
        self._check_adjustments(part)
        self._check_payment_links(part)
        self._check_kept_before_payment(part)
        await self._check_claims(part)
        self._check_account_rows(part, "balances")
        self._check_purchases_view(part)
        self._check_statement_view(part)
        self._check_holds_view(part)
        self._check_grants_view(part)
        self._check_account_rows(part, "notifications")  # the alerts' own copy of the buckets
        seconds = time.perf_counter() - started
        return Report(
            events=part.events,
            streams=part.streams,
            accounts=part.accounts,
            checkout_sessions=len(part.sessions),
            snapshots=part.snapshots,
            seconds=round(seconds, 3),
            events_per_second=round(part.events / seconds, 1) if seconds else 0.0,
            jobs=self.jobs,
            projection_positions=self.positions,
            findings=sorted(self.findings, key=_finding_order),
        )

    async def _check_positions(self) -> None:
        """A view's position is the last event it folded: never past the store's last
        event (where it would skip the events written there when they come)."""
        last = await self.connection.fetchval("SELECT max(notification_id) FROM stored_events")
        for projection in all_projections():
            if projection.name not in self.positions and await self.connection.fetchval(
                f"SELECT EXISTS (SELECT FROM {projection.table})"
            ):
                self.findings.append(
                    Finding(
                        kind="projection-position",
                        detail=f"the {projection.name} view has rows and no position (its "
                        "row in projection_positions is gone): the projector would fold every "
                        "event into it again",
                    )
                )
        for view, position in sorted(self.positions.items()):
            if position > (last or 0):
                self.findings.append(
                    Finding(
                        kind="projection-position",
                        detail=f"the {view} view is at position {position}, past the store's "
                        f"last event ({last or 0}): it would skip the events written up to it",
                    )
                )

    async def _check_protections(self) -> None:
        """History is append-only by trigger, and the service's and the relay's roles may only
        read it: a trigger dropped or disabled, or a privilege granted, would let history
        change without a trace of how (the hash chains show what, not who). And a relay's
        position is the relay's own: moved by another role, events would never reach the
        broker, or reach it again."""
        rows = await self.connection.fetch(
            _PROTECTIONS, list(_APPEND_ONLY), list(LOGIN_ROLES), _APPEND_ONLY_BODY
        )
        rows += await self.connection.fetch(
            _RELAY_POSITION_PROTECTIONS, list(LOGIN_ROLES), _NOT_A_RELAY
        )
        for row in rows:
            self.findings.append(
                Finding(kind="store-protection", detail=f"{row['problem']} on {row['name']}")
            )

    async def _check_hidden_events(self, part: Part) -> None:
        """Events that readers in commit order never reach, though they are in the store."""
        if not part.hidden:
            return
        rows = await self.connection.fetch(
            _STREAM_ACCOUNTS, list({hidden.stream_id for hidden in part.hidden})
        )
        accounts: dict[UUID, str | None] = {row["originator_id"]: row["account_id"] for row in rows}
        for hidden in part.hidden:
            self.findings.append(
                Finding(
                    kind="hidden-event",
                    detail=f"its transaction id {hidden.transaction_id} had not ended when this "
                    "audit began, so the event feeds, the account histories and the projector "
                    "pass over it: its transaction_id was changed by hand, or the database was "
                    "restored into a PostgreSQL whose transaction ids are behind the original's "
                    "(docs/backup-and-restore.md)",
                    account_id=accounts.get(hidden.stream_id),
                    stream_id=str(hidden.stream_id),
                    version=hidden.version,
                    position=hidden.position,
                )
            )
        if (more := part.hidden_count - len(part.hidden)) > 0:
            self.findings.append(
                Finding(
                    kind="hidden-event",
                    detail=f"{more:,} more events up to position {part.last_hidden} are "
                    "hidden from readers in the same way",
                )
            )

    async def _replay_in_workers(self, on_progress: Callable[[int], None]) -> list[Part]:
        """Part 0 is replayed here, each other part by a worker process, all in this snapshot.

        This process would only wait otherwise; and its part starts at once, while
        the workers start Python and import the domain.
        """
        assert self.database_url is not None
        # This transaction holds the snapshot the workers read: it stays open, idle,
        # until they are done, however long that takes.
        await self.connection.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        snapshot = await self.connection.fetchval("SELECT pg_export_snapshot()")
        jobs = [
            PartJob(
                database_url=self.database_url,
                snapshot=snapshot,
                index=index,
                count=self.jobs,
                positions=self.positions,
                checkpoints=[c.replay.empty_copy() for c in self.checkpoints],
            )
            for index in range(1, self.jobs)
        ]
        context = multiprocessing.get_context("spawn")
        progress: multiprocessing.Queue[int] = context.Queue()
        reported = 0

        def report(events: int) -> None:
            nonlocal reported
            on_progress(events)
            reported += _drain(progress, on_progress)

        with ProcessPoolExecutor(
            len(jobs), mp_context=context, initializer=_start_worker, initargs=(progress,)
        ) as executor:
            done: asyncio.Future[list[Part]] | None = None
            views_read: asyncio.Future[None] | None = None
            try:
                with started_deaf_to_ctrl_c():
                    futures = [executor.submit(_replay_in_worker, job) for job in jobs]
                done = asyncio.gather(*map(asyncio.wrap_future, futures))
                # The views are read beside the replay, on a connection of their own in the
                # same snapshot: PostgreSQL digests the statement while Python replays.
                views_read = asyncio.ensure_future(self._read_views_beside(snapshot))
                here = await replay_part(
                    self.connection,
                    self.positions,
                    [c.replay.empty_copy() for c in self.checkpoints],
                    report,
                    (0, self.jobs),
                )
                await views_read
                while not done.done():
                    await asyncio.wait([done], timeout=PROGRESS_SECONDS)
                    reported += _drain(progress, on_progress)
            except BaseException:  # Ctrl-C among them: the workers ignore it
                stop_pool_now(executor)
                for pending in (done, views_read):
                    if pending is not None:
                        pending.cancel()
                        pending.add_done_callback(_outcome_seen)
                raise
            parts = [here, *done.result()]
        progress.close()
        # Counts still on their way through the queue when the results came.
        if (unreported := sum(p.events for p in parts[1:]) - reported) > 0:
            on_progress(unreported)
        return parts

    def _check_purchases(self, part: Part) -> None:
        sessions = {s.session_id: s for s in part.sessions}
        for session_id, credits in part.credited.items():
            if len(credits) > 1:
                positions = ", ".join(str(p) for _, _, p in credits)
                self.findings.append(
                    Finding(
                        kind="credited-twice",
                        account_id=credits[0][0],
                        detail=f"session {session_id} credited {len(credits)} times "
                        f"(positions {positions})",
                    )
                )
            account_id, amount, position = credits[0]
            session = sessions.get(session_id)
            if session is None or not session.paid:
                self.findings.append(
                    Finding(
                        kind="purchase-without-checkout",
                        account_id=account_id,
                        position=position,
                        detail=f"CreditsPurchased names session {session_id}, which was never paid",
                    )
                )
            elif (session.account_id, session.credits) != (account_id, amount):
                self.findings.append(
                    Finding(
                        kind="purchase-mismatch",
                        account_id=account_id,
                        position=position,
                        detail=f"credited {amount} to {account_id}; session {session_id} sold "
                        f"{session.credits} to {session.account_id}",
                    )
                )

    def _check_adjustments(self, part: Part) -> None:
        """What refunds and disputes took back of each purchase: by the rule, and on its account.

        Sessions disputed under the first releases' rules (``PaymentDisputed``,
        ``DisputeClosed``) kept what those rules decided: only their account is checked. A
        chargeback's share rounded down, as it was before it was rounded up, is accepted;
        the refunds' share and the disputes' are each judged, not only their sum.
        """
        taken_back = dict(part.taken_back)
        for session in part.sessions:
            took = session.clawed_back + session.reversed
            given = taken_back.pop(session.session_id, None)
            problems = []
            rule = session.rule
            if rule is not None and not session.took_by_a_rule():
                problems.append(
                    f"its refunds and disputes took back {took} credits "
                    f"({session.clawed_back} refunded, {session.reversed} "
                    f"disputed), its facts {rule.refunded + rule.disputed} ({rule.refunded} "
                    f"refunded, {rule.disputed} disputed)"
                )
            if session.amount_refunded != session.refunded_by_facts:
                problems.append(
                    f"it recorded {session.amount_refunded} refunded, its facts "
                    f"{session.refunded_by_facts}"
                )
            if (given.credits if given else 0) != took:
                problems.append(
                    f"its account's events took back {given.credits if given else 0} credits, "
                    f"the session {took}"
                )
            elif (moved := tuple(given.moved) if given else (0,) * len(_MOVED)) != session.moved:
                problems.append(
                    f"its account's events {_moved_said(moved)}; the session's "
                    f"{_moved_said(session.moved)}"
                )
            if given and (given.account_id != session.account_id or given.other_accounts):
                accounts = ", ".join(sorted({given.account_id, *given.other_accounts}))
                problems.append(f"sold to {session.account_id}, taken back from {accounts}")
            self.findings.extend(
                Finding(
                    kind="adjustment-mismatch",
                    account_id=session.account_id,
                    stream_id=str(session.stream_id),
                    position=given.position if given else None,
                    detail=f"session {session.session_id}: {problem}",
                )
                for problem in problems
            )
        for session_id, given in taken_back.items():
            self.findings.append(
                Finding(
                    kind="adjustment-mismatch",
                    account_id=given.account_id,
                    position=given.position,
                    detail=f"credits taken back for session {session_id}, which was never "
                    "requested",
                )
            )

    async def _read_views(self, connection: Connection | None = None) -> None:
        """Every view's rows the replay is compared with, in this transaction's snapshot."""
        connection = connection or self.connection
        for view, query in _VIEW_QUERIES.items():
            self.views[view] = await connection.fetch(query)
        self.links = await connection.fetch(
            "SELECT key, response FROM claims WHERE scope = $1", LINK_SCOPE
        )
        self.claim_counts = []
        for row in await connection.fetch(_CLAIMS_READ):
            scope = row["scope"]
            if row["keys"] is None:
                self.claim_counts.append(row)
                continue
            kept = self.void_claims if scope.startswith("void/") else self.purchase_claims
            pairs = zip(row["keys"], row["kept"], strict=True)
            kept.extend((scope, key, value) for key, value in pairs)
        self.settlement_claims = []
        async for row in connection.cursor(_SETTLEMENT_CLAIMS_READ, prefetch=5000):
            try:
                answer = msgspec.json.decode(row["response"], type=Hold)
            except msgspec.DecodeError:
                told = None
            else:
                told = _Settled(answer.status, answer.captured, answer.released)
            self.settlement_claims.append(
                (row["scope"].removeprefix(_SETTLEMENT_SCOPE), row["key"], told)
            )

    async def _read_views_beside(self, snapshot: str) -> None:
        """``_read_views`` on a connection of its own, in the exported ``snapshot``."""
        assert self.database_url is not None
        connection = await asyncpg.connect(self.database_url)
        try:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                await connection.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                await self._read_views(connection)
        finally:
            await connection.close()

    def _check_payment_links(self, part: Part) -> None:
        """Each payment intent's link names the session that intent paid: refunds and
        disputes, which name only the intent, are applied to the session it names."""
        sessions = {s.session_id: s for s in part.sessions}
        for link in self.links:
            intent, session_id = link["key"], link["response"].decode(errors="replace")
            if not session_id:
                continue  # claimed by a refund or dispute that came first: the intent's stream links
            session = sessions.get(session_id)
            if session is None:
                problem = "the store has no such session"
            elif session.payment_intent not in (None, intent):
                problem = f"which {session.payment_intent} paid"
            else:
                continue  # paid by it, or a payment of another amount, which names none
            self.findings.append(
                Finding(
                    kind="payment-link",
                    account_id=session.account_id if session else None,
                    detail=f"payment intent {intent} is linked to session {session_id}, "
                    f"{problem}: its refunds and disputes would be applied there",
                )
            )

    def _check_kept_before_payment(self, part: Part) -> None:
        """What a payment intent kept before its payment (a refund, a refund's status, a
        dispute's) is what the session it links took when the payment came (or newer news):
        the session and its account agreeing is no proof that they heard it. Sessions
        disputed under the first releases' rules are left alone, as ``_check_adjustments``
        leaves them."""
        sessions = {s.session_id: s for s in part.sessions}
        for intent in part.intents:
            session = sessions.get(intent.session_id)
            if session is not None and session.rule is None:
                continue
            missed = _not_taken(intent, session) if session is not None else ["everything"]
            if not missed:
                continue
            self.findings.append(
                Finding(
                    kind="payment-link",
                    account_id=session.account_id if session else None,
                    detail=f"payment intent {intent.payment_intent} kept, before its payment, "
                    f"what its session {intent.session_id} never took: {', '.join(missed)}"
                    + ("" if session else " (the store has no such session)"),
                )
            )

    async def _check_claims(self, part: Part) -> None:
        """One claim per spend, hold and grant recorded, none for an open hold's settlement,
        and a settled hold's telling its settlement: claims are what makes a retry safe, and
        nothing else records them."""
        counted: dict[str, list[int]] = {}
        for row in self.claim_counts:
            scope, _, account_id = row["scope"].partition("/")
            counts = counted.setdefault(account_id, [0] * len(_CLAIM_SCOPES))
            counts[_CLAIM_SCOPES.index(scope)] = row["claims"]
        kinds = sorted(_CLAIMED, key=_CLAIMED.__getitem__)
        for account_id, events in part.claimed.items():
            claims = counted.get(account_id, [0] * len(_CLAIM_SCOPES))
            for scope, kind, made, recorded in zip(
                _CLAIM_SCOPES, kinds, claims, events, strict=True
            ):
                if made != recorded:
                    self.findings.append(
                        Finding(
                            kind="claim-mismatch",
                            account_id=account_id,
                            detail=f"{made} {scope} claims, {recorded} {kind.__name__} events: "
                            + (
                                "a key whose claim is gone is recorded again when retried"
                                if made < recorded
                                else "a claim with no event answers its key's request, "
                                "which was never recorded"
                            ),
                        )
                    )
        # Claims of an account with no events (no account stream) answer their keys'
        # requests, spends among them, as if recorded: nothing above counted them.
        for account_id in sorted(counted.keys() - part.claimed.keys() - set(part.unreplayed)):
            for scope, made in zip(_CLAIM_SCOPES, counted[account_id], strict=True):
                if made:
                    self.findings.append(
                        Finding(
                            kind="claim-mismatch",
                            account_id=account_id,
                            detail=f"{made} {scope} claims for an account with no events: "
                            "each answers its key's request, which was never recorded",
                        )
                    )
        self._check_purchase_answers(part)
        # A void's key is optional, so voids are not counted: each void claim must be the
        # request of a void recorded on its account (grant and reason). One that is not was
        # never recorded, and answers a request to void that grant without voiding it.
        for scope, key, request_hash in self.void_claims:
            account_id = scope.removeprefix("void/")
            if (account_id, request_hash) not in part.voids:
                self.findings.append(
                    Finding(
                        kind="claim-mismatch",
                        account_id=account_id,
                        detail=f"void key {key!r} is claimed for a void no GrantVoided "
                        "records: a request under it is answered voided, and its grant stays",
                    )
                )
        self._check_settlement_answers(part)

    def _check_settlement_answers(self, part: Part) -> None:
        """A settled hold's claim answers its capture, release and expiry, their retries and
        the hold's reads: it tells the settlement recorded (its kind, captured and released).
        A claim of a hold never settled answers that hold's settlement once it is placed, and
        it is never recorded. None is of a hold open at the end, as a hold's settlement and
        its claim are written together: one there answers its capture, release and expiry,
        recording none, and the hold keeps its credits for good. A settled hold with no claim
        is read, and its settlement retried, as a hold never placed (404)."""
        unreplayed = set(part.unreplayed)
        open_holds = set(part.open_holds)
        none: dict[str, _Settled] = {}
        claimed: set[tuple[str, str]] = set()
        for account_id, hold_id, told in self.settlement_claims:
            if account_id in unreplayed:
                continue
            claimed.add((account_id, hold_id))
            recorded = part.settled_holds.get(account_id, none).get(hold_id)
            if (account_id, hold_id) in open_holds:
                self.findings.append(
                    Finding(
                        kind="claim-mismatch",
                        account_id=account_id,
                        detail=f"hold {hold_id} is open and its settlement is claimed: its "
                        "capture, release and expiry are answered from the claim and never "
                        "recorded, and it keeps its credits",
                    )
                )
                continue
            if recorded is None:
                problem = f"hold {hold_id}'s settlement is claimed, and no such hold was settled"
            elif told is None:
                problem = f"hold {hold_id}'s settlement claim answers what cannot be read"
            elif told != recorded:
                kind = {"captured": HoldCaptured, "released": HoldReleased}.get(
                    recorded.status, HoldExpired
                )
                problem = (
                    f"hold {hold_id}'s settlement claim answers {told.status} {told.captured}, "
                    f"released {told.released}; its {kind.__name__} records "
                    + (f"captured {recorded.captured}, " if kind is HoldCaptured else "")
                    + f"released {recorded.released}"
                )
            else:
                continue
            self.findings.append(
                Finding(
                    kind="claim-mismatch",
                    account_id=account_id,
                    detail=f"{problem}: its capture, release and expiry, their retries and its "
                    "reads are answered so",
                )
            )
        for account_id, settled in part.settled_holds.items():
            if account_id in unreplayed:
                continue
            for hold_id, recorded in settled.items():
                if (account_id, hold_id) not in claimed:
                    self.findings.append(
                        Finding(
                            kind="claim-mismatch",
                            account_id=account_id,
                            detail=f"hold {hold_id} was {recorded.status} and no claim records "
                            "its settlement: its reads and the retries of its capture, release "
                            "and expiry are answered that it was never placed",
                        )
                    )

    def _check_purchase_answers(self, part: Part) -> None:
        """A purchase's key answers a retry with where to pay: a session of the key's account,
        at the address its CheckoutRequested recorded (another account's would be paid for
        and credit that account)."""
        sessions = {s.session_id: s for s in part.sessions}
        for scope, key, response in self.purchase_claims:
            account_id = scope.removeprefix("purchase/")
            try:
                answer = msgspec.json.decode(response, type=CheckoutStarted)
            except msgspec.DecodeError as error:
                problem = f"cannot be read ({error})"
            else:
                session = sessions.get(answer.session_id)
                if session is None:
                    problem = f"names session {answer.session_id}, which was never requested"
                elif session.account_id != account_id:
                    problem = f"names session {answer.session_id}, {session.account_id}'s"
                elif session.checkout_url != answer.checkout_url:
                    problem = (
                        f"sends it to pay session {answer.session_id} at "
                        f"{answer.checkout_url}, not at {session.checkout_url}"
                    )
                else:
                    continue
            self.findings.append(
                Finding(
                    kind="claim-mismatch",
                    account_id=account_id,
                    detail=f"the answer kept for purchase key {key!r} {problem}: a retry "
                    "of the key is given it",
                )
            )

    def _check_account_rows(self, part: Part, view: str) -> None:
        """Compare a view's row per account, field by field, with the replay at its position."""
        expected = dict(part.figures.get(view, {}))
        for row in self.views[view]:
            want = expected.pop(row["account_id"], None)
            if want is None:
                self._view_finding(view, row["account_id"], "a row for no account")
                continue
            for field in row.keys():  # noqa: SIM118 (a Record iterates its values)
                if field != "account_id" and row[field] != getattr(want, field):
                    self._view_finding(
                        view,
                        row["account_id"],
                        f"{field} is {row[field]} in the view, {getattr(want, field)} replayed",
                    )
        for account_id in expected:
            self._view_finding(view, account_id, "the account is missing from the view")

    def _check_purchases_view(self, part: Part) -> None:
        expected: dict[str, tuple[str, PurchaseAt | None]] = dict(part.purchase_rows)
        fields = PurchaseAt.__struct_fields__
        for row in self.views["purchases"]:
            account_id, want = expected.pop(row["session_id"], (row["account_id"], None))
            if want is None:
                self._view_finding(
                    "purchases", account_id, f"session {row['session_id']} was never requested"
                )
                continue
            if row["account_id"] != account_id:
                self._view_finding(
                    "purchases",
                    account_id,
                    f"session {row['session_id']} is account {row['account_id']}'s in the view",
                )
            for field in fields:
                if row[field] != getattr(want, field):
                    self._view_finding(
                        "purchases",
                        account_id,
                        f"session {row['session_id']}: {field} is {row[field]} in the view, "
                        f"{getattr(want, field)} replayed",
                    )
        for session_id, (account_id, _) in expected.items():
            self._view_finding("purchases", account_id, f"session {session_id} is missing")

    def _check_statement_view(self, part: Part) -> None:
        expected = dict(part.figures.get("statement", {}))
        for row in self.views["statement"]:
            want = expected.pop(row["account_id"], None)
            if want is None:
                self._view_finding("statement", row["account_id"], "lines for no account")
            elif row["lines"] != want.statement_lines:
                self._view_finding(
                    "statement",
                    row["account_id"],
                    f"{row['lines']} lines in the view, {want.statement_lines} replayed",
                )
            elif row["digest"] != want.statement_digest:
                self._view_finding(
                    "statement",
                    row["account_id"],
                    f"its {row['lines']} lines are not the replay's: a line's amount, buckets, "
                    "type, time or description differs",
                )
        for account_id in expected:
            self._view_finding("statement", account_id, "the account has no lines")

    def _check_holds_view(self, part: Part) -> None:
        self._check_rows("holds", "hold", "hold_id", _HOLD_COLUMNS, part.hold_status)

    def _check_grants_view(self, part: Part) -> None:
        self._check_rows("grants", "grant", "grant_id", _GRANT_COLUMNS, part.grant_rows)

    def _check_rows(
        self,
        view: str,
        what: str,
        key: str,
        columns: tuple[str, ...],
        replayed: dict[str, _ViewRow],
    ) -> None:
        """Compare a view's row per hold or grant, column by column, with the replay."""
        expected = dict(replayed)
        for row in self.views[view]:
            found = expected.pop(row[key], None)
            if found is None:
                self._view_finding(view, "", f"{what} {row[key]} was never made")
                continue
            account_id, values, _ = found
            for column, value in zip(columns, values, strict=True):
                if row[column] != value:
                    self._view_finding(
                        view,
                        account_id,
                        f"{what} {row[key]}: {column} is {_plain(row[column])} in the view, "
                        f"{_plain(value)} replayed",
                    )
        for missing, (account_id, _, _) in expected.items():
            self._view_finding(view, account_id, f"{what} {missing} is missing")

    def _view_finding(self, view: str, account_id: str, detail: str) -> None:
        self.findings.append(
            Finding(
                kind=f"{view}-view",
                account_id=account_id,
                detail=f"{detail} (view at position {self.positions.get(view, 0)})",
            )
        )


def _figures(stream: Stream) -> AccountAt:
    account: CreditAccount = stream.aggregate
    return AccountAt(
        monthly_allowance=account.monthly_allowance,
        allowance_remaining=account.allowance_remaining,
        topup_balance=account.topup_balance,
        granted=account.granted,
        held=account.held,
        threshold=account.__dict__.get("low_balance_threshold"),
        period=account.period,
        statement_lines=stream.statement_lines,
        balance=account.balance,
        statement_digest=(
            _NO_LINES if stream.statement_digest is None else stream.statement_digest.hexdigest()
        ),
        next_monthly_allowance=account.next_monthly_allowance,
        stream_id=account.id,
    )


_LineHead = tuple[Callable[..., bytes], bytes, Callable[[Any], str]]
_LINE_HEADS: dict[type, _LineHead] = {
    kind: (struct.Struct(f">11q{len(name)}si").pack, name, DESCRIPTIONS[kind])
    for kind in STATEMENT_EVENTS
    for name in [length_prefixed(kind.__name__)]  # an ASCII class name
}
"""Per kind of statement event, how a line's bytes up to its description are packed in one
call: its eleven numbers, the kind's name after its length, the description's length; and
how the statement describes it (``projections.balance_changes.DESCRIPTIONS``: found here
once, not by ``description_of`` for each line)."""
assert all(describe is not None for _, _, describe in _LINE_HEADS.values())


def _excuse_less_repayable(loaded: CreditAccount, replayed: Any) -> None:
    """An account's snapshot may keep less than the replay of what the carried allowance
    shares may repay: one taken before snapshots kept that figure in parts loads with none
    (``CreditAccount.upcast_v6_v7``), and so does every later snapshot of an account loaded
    from it, never more for the share of a hold placed in any period (``repayable_by``:
    what it may repay only grows with what it started from). Its holds then repay less than
    the rule allows, as the audit accepts of a settlement; only more than the events give
    is reported."""
    kept, made = loaded.carried_repayable, getattr(replayed, "carried_repayable", ())
    if kept == made:
        return
    origins = {part.origin for part in (*kept, *made)}
    if all(repayable_by(kept, origin) <= repayable_by(made, origin) for origin in origins):
        loaded.carried_repayable = made


_ABSENT = object()


def _differences(snapshot: Any, replayed: Any) -> list[str]:
    """How an aggregate loaded from a snapshot differs from the replayed one, field by field."""
    if type(snapshot) is not type(replayed):
        return [f"is a {type(snapshot).__name__}, the events make a {type(replayed).__name__}"]
    kept, made = vars(snapshot), vars(replayed)
    return [
        f"has {name} {_shown(kept.get(name, _ABSENT))}, the events make "
        f"{_shown(made.get(name, _ABSENT))}"
        for name in sorted((kept.keys() | made.keys()) - _NOT_COMPARED)
        if kept.get(name, _ABSENT) != made.get(name, _ABSENT)
    ]


def _shown(value: object) -> str:
    return "nothing" if value is _ABSENT else repr(value)


def _plain(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _purchase_at(session: CheckoutSession, stream: Stream) -> PurchaseAt:
    mismatched = session.status == MISMATCHED
    return PurchaseAt(
        status="pending" if mismatched else session.status,
        needs_review=mismatched,
        amount_refunded=session.amount_refunded,
        credits_clawed_back=session.credits_clawed_back,
        credits_reversed=session.credits_reversed,
        credits=session.credits,
        amount=session.amount,
        currency=session.currency,
        position=stream.first_position,
        created_at=stream.requested_at,
        paid_at=stream.paid_at,
        updated_at=stream.updated_at,
    )


def _unkept(account: CreditAccount, hold: OpenHold, settled: Any, captured: int) -> list[str]:
    """What a settlement moves that its hold did not reserve, bucket by bucket, judged
    without ``CreditAccount.settlement``: the hold's amount is captured or released, what is
    captured is spent from its shares, and no share is spent and lapsed beyond what the hold
    reserved of it, nor a grant's share lapsed while the grant is open; what resets kept for
    holds is spent or lapses at most once; a debt is repaid from what lapses of the allowance,
    no more than is owed, nor than the resets that carried the shares left owed (less what
    later resets and other shares repaid of it: the parts of ``carried_repayable`` the
    hold's share may repay)."""
    spent_allowance = getattr(settled, "from_allowance", 0)
    kept_spent = getattr(settled, "kept_spent", 0)
    spent_topup = getattr(settled, "from_topup", 0) + kept_spent
    spent_grants: dict[str, int] = getattr(settled, "from_grants", {})
    lapsed_grants: dict[str, int] = settled.grants_lapsed
    problems = []
    if captured + settled.released != hold.amount:
        problems.append(f"{captured} captured and {settled.released} released of {hold.amount}")
    if spent_allowance + spent_topup + sum(spent_grants.values()) != captured:
        spent = spent_allowance + spent_topup + sum(spent_grants.values())
        problems.append(f"{spent} spent from its shares of {captured} captured")
    if min(spent_allowance, settled.lapsed) < 0 or (
        spent_allowance + settled.lapsed > hold.from_allowance
    ):
        problems.append(
            f"{spent_allowance} spent and {settled.lapsed} lapsed of its "
            f"{hold.from_allowance} of the allowance"
        )
    if not 0 <= spent_topup <= hold.from_topup or kept_spent < 0:
        problems.append(f"{spent_topup} spent of its {hold.from_topup} of top-ups")
    if spent_grants or lapsed_grants or hold.from_grants:
        shares = dict(hold.from_grants)
        for grant_id in sorted(spent_grants.keys() | lapsed_grants.keys() | shares.keys()):
            spent, lapsed = spent_grants.get(grant_id, 0), lapsed_grants.get(grant_id, 0)
            share = shares.get(grant_id, 0)
            grant = account.grants.get(grant_id)
            open_grant = grant is not None and grant.status == ACTIVE
            if min(spent, lapsed) < 0 or spent + lapsed > share:
                problems.append(
                    f"{spent} spent and {lapsed} lapsed of its {share} of grant {grant_id}"
                )
            elif not open_grant and spent + lapsed < share:
                problems.append(
                    f"{spent} spent and {lapsed} lapsed of its {share} of grant {grant_id}, "
                    "which is closed: the rest stays in it"
                )
            if lapsed and open_grant:
                problems.append(f"{lapsed} of grant {grant_id} lapsed, which is open")
    owed = max(getattr(settled, "from_topup", 0) - account.topup_balance, 0)
    # Summed over the parts only for a settlement that repaid any.
    repayable = repayable_by(account.carried_repayable, hold.period) if settled.debt_repaid else 0
    if not 0 <= settled.debt_repaid <= min(settled.lapsed, owed, repayable):
        problems.append(
            f"{settled.debt_repaid} of a debt repaid from {settled.lapsed} of the allowance "
            f"lapsed, with {owed} owed, {repayable} of it left by the resets that carried "
            "the shares over"
        )
    if settled.kept_lapsed < 0 or kept_spent + settled.kept_lapsed > account.kept_for_holds:
        problems.append(
            f"{kept_spent} spent and {settled.kept_lapsed} lapsed of the "
            f"{account.kept_for_holds} resets kept for holds"
        )
    return problems


_DISPUTES = frozenset({DisputeUpdated, PaymentDisputed, DisputeClosed})


def _changes_purchase(event: Any) -> bool:
    """Whether a session's event changes its purchase row: every one does but a dispute's
    that moved no credits (the row shows what the purchase is worth, not the dispute)."""
    if type(event) in _DISPUTES:  # by class, as _HOLD_STATUS: isinstance of a union costs more
        return bool(getattr(event, "credits_reversed", 0) or getattr(event, "credits_restored", 0))
    return True


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat()


_GRANTS_TOUCHED: dict[type, Callable[[Any], Collection[str]]] = {
    CreditsGranted: lambda granted: [granted.grant_id],
    GrantExpired: lambda expired: [expired.grant_id],
    GrantVoided: lambda voided: [voided.grant_id],
    CreditsSpent: attrgetter("from_grants"),  # no frame of ours for a spend
    HoldPlaced: attrgetter("from_grants"),
    HoldCaptured: lambda captured: captured.from_grants.keys() | captured.grants_lapsed.keys(),
    HoldReleased: attrgetter("grants_lapsed"),
    HoldExpired: attrgetter("grants_lapsed"),
}
"""The grants each kind of account event moves or closes (by class, as ``_HOLD_STATUS``:
a ``match`` of class patterns cost every spend four ``isinstance`` calls): the event's own
dict where its keys are the grants, so a spend that took from none makes no object."""


class _Versioned(msgspec.Struct):
    class_version: int = 1


_versioned = msgspec.json.Decoder(_Versioned).decode


def _stored_version(state: bytes) -> int:
    """The class version an event was stored at (the mapper writes it past version 1)."""
    return _versioned(state).class_version


def _account_of(aggregate: Any) -> str | None:
    return getattr(aggregate, "account_id", None)


def _session_at(stream_id: UUID, stream: Stream) -> SessionAt:
    session: CheckoutSession = stream.aggregate
    rule = rounded_down = None
    # Judged on the facts, not on the figure the session recorded from them: a forged
    # RefundUpdated or PaymentRefunded.refunded_now may say less was refunded than they do.
    refunded = session.money_refunded(session.largest_refunded, session.refunds)
    if not stream.older_disputes:
        facts = (session.credits, session.amount, refunded, session.disputes)
        rule = taken_back(*facts) if session.paid else Worth(0, 0)
        if session.paid and session.disputes:
            rounded_down = taken_back(*facts, chargeback_rounded_up=False)
            rounded_down = None if rounded_down == rule else rounded_down
    return SessionAt(
        stream_id=stream_id,
        session_id=session.session_id,
        account_id=session.account_id,
        credits=session.credits,
        paid=session.paid,
        clawed_back=session.credits_clawed_back,
        reversed=session.credits_reversed,
        rule=rule,
        rounded_down=rounded_down,
        payment_intent=session.payment_intent,
        checkout_url=session.checkout_url,
        amount_refunded=session.amount_refunded,
        refunded_by_facts=refunded,
        amount=session.amount,
        largest_refunded=session.largest_refunded,
        refunds=session.refunds,
        disputes=session.disputes,
        moved=tuple(stream.moved),
    )


def _intent_at(intent: PaymentIntent) -> IntentAt | None:
    """What a linked intent kept before its payment (None: linked and nothing kept, or not
    linked: a refund of another product's payment stays there)."""
    if not intent.session_id or not (intent.amount_refunded or intent.refunds or intent.disputes):
        return None
    return IntentAt(
        payment_intent=intent.payment_intent,
        session_id=intent.session_id,
        amount_refunded=intent.amount_refunded,
        refunds=intent.refunds,
        disputes=intent.disputes,
    )


def _not_taken(intent: IntentAt, session: SessionAt) -> list[str]:
    """What of the intent's facts the session never heard, nor anything newer of."""
    missed = []
    if min(intent.amount_refunded, session.amount) > session.largest_refunded:
        missed.append(f"an amount_refunded of {intent.amount_refunded}")
    facts: tuple[tuple[str, dict[str, int], Mapping[str, Any], Mapping[str, Any]], ...] = (
        ("refund", REFUND_STAGE, intent.refunds, session.refunds),
        ("dispute", DISPUTE_STAGE, intent.disputes, session.disputes),
    )
    for what, stages, kept, heard in facts:
        for fact_id, fact in kept.items():
            known = heard.get(fact_id)
            if known is None or later_stage(stages, known.status, fact.status):
                missed.append(f"{what} {fact_id} ({fact.status})")
    return missed


def _moved_by(taken_or_given: Any) -> int:
    """Which of ``_MOVED`` an account event naming a session is: a restoration with a
    refund's id gives back what a failed refund's clawback took, one without what a
    chargeback took."""
    kind = type(taken_or_given)
    if kind is CreditsClawedBack:
        return 0
    if kind is CreditsReversed:
        return 2
    return 1 if taken_or_given.refund_id else 3


def _moved_said(moved: Sequence[int]) -> str:
    return ", ".join(f"{credits} {said}" for credits, said in zip(moved, _MOVED_SAID, strict=True))


def merge_parts(parts: Sequence[Part]) -> Part:
    """One Part from the parts of disjoint sets of streams, as one replay of all would make it."""
    merged, *others = parts
    for part in others:
        _add_part(merged, part)
    for credits in merged.credited.values():
        credits.sort(key=lambda credit: credit[2])  # by position, as one replay meets them
    merged.hidden = sorted(merged.hidden, key=attrgetter("position"))[:_HIDDEN_SHOWN]
    return merged


def _add_part(into: Part, part: Part) -> None:
    into.events += part.events
    into.streams += part.streams
    into.accounts += part.accounts
    into.snapshots += part.snapshots
    into.findings.extend(part.findings)
    for session_id, credits in part.credited.items():
        into.credited.setdefault(session_id, []).extend(credits)
    for session_id, given in part.taken_back.items():
        known = into.taken_back.get(session_id)
        into.taken_back[session_id] = given if known is None else _given_by_both(known, given)
    into.sessions.extend(part.sessions)
    into.intents.extend(part.intents)
    for view, rows in part.figures.items():
        into.figures.setdefault(view, {}).update(rows)
    into.purchase_rows.update(part.purchase_rows)
    _keep_latest(into.hold_status, part.hold_status)
    _keep_latest(into.grant_rows, part.grant_rows)
    into.stream_accounts.update(part.stream_accounts)
    into.claimed.update(part.claimed)
    into.unreplayed.extend(part.unreplayed)
    into.open_holds.extend(part.open_holds)
    into.settled_holds.update(part.settled_holds)
    into.voids |= part.voids
    for replayed, more in zip(into.checkpoints, part.checkpoints, strict=True):
        replayed.merge(more)
    into.hidden.extend(part.hidden)
    into.hidden_count += part.hidden_count
    into.last_hidden = max(into.last_hidden, part.last_hidden)


def _given_by_both(a: GivenBack, b: GivenBack) -> GivenBack:
    """What accounts in two parts took back of one session: the first account is the seller's."""
    first, second = sorted((a, b), key=lambda given: given.first_position)
    return GivenBack(
        account_id=first.account_id,
        credits=a.credits + b.credits,
        position=max(a.position, b.position),
        other_accounts=(first.other_accounts | second.other_accounts | {second.account_id})
        - {first.account_id},
        first_position=first.first_position,
        moved=[x + y for x, y in zip(a.moved, b.moved, strict=True)],
    )


_Row = TypeVar("_Row", bound=tuple[Any, ...])


def _keep_latest(into: dict[str, _Row], rows: dict[str, _Row]) -> None:
    """Merge rows whose last item is a position: a later one wins, as it would in one replay."""
    for key, row in rows.items():
        known = into.get(key)
        if known is None or row[-1] > known[-1]:
            into[key] = row


def _finding_order(finding: Finding) -> tuple[Any, ...]:
    """By position (findings with none last), then by every field: the same for any --jobs."""
    return (
        finding.position is None,
        finding.position or 0,
        finding.stream_id or "",
        finding.version or 0,
        finding.kind,
        finding.account_id or "",
        finding.detail,
    )


def _part_filter(part: tuple[int, int] | None) -> str:
    """The WHERE clause choosing part ``index`` of ``count`` by a hash of the stream id."""
    if part is None:
        return ""
    index, count = part
    return f"WHERE {stream_part(index, count)}"


async def _read_snapshots(
    connection: Connection, where: str
) -> tuple[dict[UUID, dict[int, StoredSnapshot]], int]:
    """Every snapshot, by stream and version, to compare with the replay as it passes."""
    rows = await connection.fetch(
        f"""SELECT originator_id, originator_version, topic, state, event_recorded_at
            FROM snapshots {where}"""
    )
    snapshots: dict[UUID, dict[int, StoredSnapshot]] = {}
    for row in rows:
        snapshot = StoredSnapshot(*row)
        snapshots.setdefault(snapshot.originator_id, {})[snapshot.originator_version] = snapshot
    return snapshots, len(rows)


async def replay_part(
    connection: Connection,
    positions: dict[str, int],
    checkpoints: Sequence[CheckpointReplay],
    on_progress: Callable[[int], None],
    part: tuple[int, int] | None = None,
) -> Part:
    """Replay the streams of ``part`` (index, count), or all of them, in position order."""
    where = _part_filter(part)
    snapshots, snapshot_count = await _read_snapshots(connection, where)
    replay = StreamReplay(positions, snapshots, checkpoints)
    count = 0
    # Each event's time read as the microseconds PostgreSQL keeps, by asyncpg's codec: a row
    # is then the event's fields, made an event with no call of ours in between.
    async with times_as_microseconds(connection, writes_datetimes=False):
        cursor = await connection.cursor(
            events_of_part(*part, columns=_AUDITED_COLUMNS)
            if part is not None
            else f"SELECT {_AUDITED_COLUMNS} FROM stored_events ORDER BY notification_id"
        )
        next_rows = asyncio.ensure_future(cursor.fetch(CURSOR_PREFETCH))
        try:
            while rows := await next_rows:
                # Ask for the next batch before replaying this one: the server reads and
                # sends it while this process is busy replaying.
                next_rows = asyncio.ensure_future(cursor.fetch(CURSOR_PREFETCH))
                await asyncio.sleep(0)
                for row in rows:
                    replay.replay(AuditedEvent(*row))
                count += len(rows)
                on_progress(len(rows))
        finally:
            # Cancelled (a Ctrl-C) while the next batch was on its way: that fetch would hold
            # the connection, and the transaction's ROLLBACK fail "another operation is in
            # progress", with a traceback where the command says "Aborted!".
            await _stopped(next_rows)
    return replay.result(count, snapshot_count)


async def _stopped(fetch: asyncio.Future[Any]) -> None:
    """Cancel ``fetch`` if it is still running and wait until it has ended."""
    if not fetch.done():
        fetch.cancel()
        await asyncio.wait([fetch])
        if not fetch.cancelled():
            fetch.exception()  # retrieved, or asyncio logs it: what ended the replay is raised


class PartJob(msgspec.Struct, frozen=True):
    """What a worker process is sent: where to read, which snapshot, which part."""

    database_url: str
    snapshot: str
    index: int
    count: int
    positions: dict[str, int]
    checkpoints: list[CheckpointReplay]


_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?")
_progress: multiprocessing.Queue[int] | None = None
"""A worker's way to report how many events it replayed (set as it starts)."""


def _start_worker(progress: multiprocessing.Queue[int]) -> None:
    global _progress
    end_with_parent()
    _progress = progress
    settle_after_start_up(young=BATCHES_YOUNG)


def _report_progress(events: int) -> None:
    if _progress is not None:
        _progress.put(events)


def _replay_in_worker(job: PartJob) -> Part:
    return event_loop.run(_replay_in_snapshot(job))


async def _replay_in_snapshot(job: PartJob) -> Part:
    """Replay one part in the parent's snapshot, on a connection of this process."""
    if not _SNAPSHOT_ID.fullmatch(job.snapshot):
        raise ValueError(f"not a snapshot id: {job.snapshot!r}")
    connection = await asyncpg.connect(
        job.database_url, server_settings={"application_name": "ledger audit verify"}
    )
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            await connection.execute(f"SET TRANSACTION SNAPSHOT '{job.snapshot}'")
            part = await replay_part(
                connection, job.positions, job.checkpoints, _report_progress, (job.index, job.count)
            )
    finally:
        await connection.close()
    part.checkpoints = [replayed.without_heads() for replayed in part.checkpoints]
    return part


def _outcome_seen(future: asyncio.Future[Any]) -> None:
    """Take an abandoned future's failure, which asyncio would log: what interrupted
    the wait for it is what is raised."""
    if not future.cancelled():
        future.exception()


def _drain(progress: multiprocessing.Queue[int], on_progress: Callable[[int], None]) -> int:
    """Pass on the counts the workers reported so far; how many events they came to."""
    total = 0
    while True:
        try:
            total += progress.get_nowait()
        except queue.Empty:
            break
    if total:
        on_progress(total)
    return total


async def verify(
    pool: asyncpg.Pool,
    on_progress: Callable[[int], None] = lambda _: None,
    checkpoints: Sequence[CheckpointAudit] = (),
    *,
    jobs: int = 1,
    database_url: str | None = None,
) -> Report:
    """Run the whole audit in one consistent, read-only snapshot.

    Each of ``checkpoints`` also sees every event and adds what disagrees with it.
    With ``jobs`` > 1 the streams are replayed by that many processes, which
    connect to ``database_url`` (the pool's database, as the service's role).
    """
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        verifier = Verifier(connection, checkpoints, jobs=jobs, database_url=database_url)
        return await verifier.run(on_progress)

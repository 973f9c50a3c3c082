"""What the audit's replay keeps: each stream's aggregate and figures (``Stream``), each
part's findings and rows (``Part``), and the event rows it reads.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from audit.checkpoint_replay import CheckpointReplay
from audit.findings import Finding
from ledger.domain.adjustments import Dispute, Refund, Worth
from ledger.domain.events import CreditsGranted, CreditsSpent, HoldPlaced, low_balance_threshold
from ledger.store.event_store import ChainedEvent
from ledger.store.hash_chain import GENESIS

ViewRow = tuple[str, tuple[Any, ...], int]
"""A hold's or grant's row as the replay makes it: (account, the view's columns, position)."""
MOVED = ("credits_clawed_back", "credits_given_back", "credits_reversed", "credits_restored")
"""What a session's refunds and disputes moved, by kind, as its events name it: each is one
kind of account event (``moved_by``), written with it (``ledger.handlers.payments._adjust``)."""
CLAIMED: dict[type, int] = {CreditsSpent: 0, HoldPlaced: 1, CreditsGranted: 2}
"""Account events each recorded with one claim of its command's Idempotency-Key (required),
by where they are counted: ``CLAIM_SCOPES`` names those claims' scopes in the same order."""
CLAIM_SCOPES = ("spend", "hold", "grant")
"""``<scope>/<account>``: ``spend_claim``, ``place_claim`` and ``grant_claim`` in
ledger/handlers."""


class AuditedEvent(ChainedEvent, frozen=True):
    """A stored event as the audit reads it: with, when the transaction that wrote it had not
    ended at the audit's snapshot, that transaction's id (``_HIDDEN_BY``)."""

    hidden_by: str | None = None


AuditedRow = tuple[UUID, int, str, bytes, int, int, bytes, str | None]
"""An ``AuditedEvent``'s fields in order, as a row of its columns holds them
(``row[WHOLE_ROW]``): what ``StreamReplay.replay`` is given."""


class HiddenEvent(msgspec.Struct, array_like=True, frozen=True):
    """An event readers in commit order pass over (``_HIDDEN_BY``)."""

    position: int
    stream_id: UUID
    version: int
    transaction_id: str


HIDDEN_SHOWN = 10
"""Hidden events reported one by one; the rest are counted."""


class Settled(msgspec.Struct, array_like=True, frozen=True):
    """What a hold's settlement recorded, as its claim's answer (``Hold``) tells it."""

    status: str
    captured: int
    released: int


NO_LINES = hashlib.md5(b"").hexdigest()  # noqa: S324


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
    statement_digest: str = NO_LINES
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
        """The MD5 of its statement lines so far (``StreamReplay.replay``), once it
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
        """When its last event that changed its purchase row was (``changes_purchase``)."""
        self.snapshots: dict[int, StoredSnapshot] | None = None
        self.older_disputes = False
        self.moved = [0] * len(MOVED)
        """A Checkout session's credits moved by its refunds and disputes, by kind
        (``MOVED``)."""
        self.claimed = [0] * len(CLAIM_SCOPES)
        """Its events counted by ``CLAIMED``."""
        self.settled: dict[str, Settled] | None = None
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
    moved: list[int] = msgspec.field(default_factory=lambda: [0] * len(MOVED))
    """The credits of each kind of those events (``MOVED``)."""


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
    moved: tuple[int, ...] = (0,) * len(MOVED)
    """What its refunds and disputes moved, by kind (``MOVED``)."""

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
    hold_status: dict[str, ViewRow] = msgspec.field(default_factory=dict)
    """Each hold's (account, ``_HOLD_COLUMNS``, position of the event) at the holds view's
    position."""
    grant_rows: dict[str, ViewRow] = msgspec.field(default_factory=dict)
    """Each grant's (account, ``_GRANT_COLUMNS``, position of the event) at the grants
    view's position."""
    stream_accounts: dict[UUID, str] = msgspec.field(default_factory=dict)
    """The account of each account stream, for the checkpoints' findings."""
    claimed: dict[str, list[int]] = msgspec.field(default_factory=dict)
    """Each account's events counted by ``CLAIMED``, of accounts replayed to their end."""
    unreplayed: list[str] = msgspec.field(default_factory=list)
    """The accounts not replayed to their end (a version gap, an unreadable event): their
    claims are counted against nothing."""
    open_holds: list[tuple[str, str]] = msgspec.field(default_factory=list)
    """(account, hold id) of each hold open at the end, of accounts replayed to their end."""
    settled_holds: dict[str, dict[str, Settled]] = msgspec.field(default_factory=dict)
    """Each hold settled, by account and hold id, of accounts replayed to their end."""
    voids: set[tuple[str, bytes]] = msgspec.field(default_factory=set)
    """(account, the fingerprint its void request had: ``void_claim``) of each GrantVoided."""
    checkpoints: list[CheckpointReplay] = msgspec.field(default_factory=list)
    hidden: list[HiddenEvent] = msgspec.field(default_factory=list)
    """The first ``HIDDEN_SHOWN`` hidden events by position."""
    hidden_count: int = 0
    last_hidden: int = 0
    """The position of the last hidden event."""

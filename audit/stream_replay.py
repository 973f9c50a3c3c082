"""The audit's replay of each event, stream by stream, in commit order: the hash chain,
the domain's aggregates, the rules the service decided by, and the rows each view
should hold.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent

from audit.appliers import APPLIERS, TOPICS, applier_of, topic_of
from audit.checkpoint_replay import CheckpointReplay
from audit.findings import Finding
from audit.replay_state import (
    CLAIMED,
    HIDDEN_SHOWN,
    MOVED,
    NO_LINES,
    AccountAt,
    AuditedEvent,
    AuditedRow,
    GivenBack,
    HiddenEvent,
    Part,
    Settled,
    StoredSnapshot,
    Stream,
    ViewRow,
)
from audit.sessions import changes_purchase, intent_at, moved_by, purchase_at, session_at
from audit.snapshots import (
    differences,
    excuse_kept_for_later_topups,
    excuse_less_repayable,
    stored_version,
)
from audit.time_skew import MAX_TIME_SKEW_SECONDS
from ledger.domain.account import MAX_GRANT, CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.errors import DomainError
from ledger.domain.events import (
    HOLD_SETTLEMENTS,
    STATEMENT_EVENTS,
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
)
from ledger.domain.grants import ACTIVE, EXPIRED, VOIDED, Grant
from ledger.domain.holds import OpenHold, Settlement, repayable_by, repaying
from ledger.domain.limits import MAX_CREDITS, MIN_CREDITS
from ledger.domain.payment_intent import PaymentIntent
from ledger.store.claims import request_fingerprint
from ledger.store.event_store import ReplayedEvent
from ledger.store.hash_chain import (
    length_prefixed,
    pack_fixed_fields,
    postgres_microseconds,
    postgres_moment,
)
from ledger.store.mapper import MsgspecMapper, event_type_name
from ledger.times import duration_in_one_unit
from projections.balance_changes import DESCRIPTIONS, SPENT
from projections.events import as_text
from projections.grants import closed_at

_HOLD_STATUS: dict[type, str] = {
    HoldPlaced: "held",
    HoldCaptured: "captured",
    HoldReleased: "released",
    HoldExpired: "expired",
}
"""The holds view's status of a hold after each of its events."""
assert set(_HOLD_STATUS) == {HoldPlaced, *HOLD_SETTLEMENTS}
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
_MOVES_CREDITS = frozenset(
    {PaymentRefunded, RefundUpdated, DisputeUpdated, PaymentDisputed, DisputeClosed}
)
"""The session events that may move credits (``MOVED``)."""
_BEFORE_ADJUSTMENTS = (PaymentDisputed, DisputeClosed)
"""Dispute events of the first releases, decided by rules older than ledger/domain/adjustments.py."""
_GRANT_CLOSED: dict[type, str] = {GrantExpired: EXPIRED, GrantVoided: VOIDED}
_ACCOUNT_VIEWS = ("balances", "notifications", "statement")
"""The views with one row (or one balance) per account: their figures are kept per stream."""
_sha256 = hashlib.sha256
_pack_fixed_fields = pack_fixed_fields
# Bound once: a method of an imported name is looked up and bound at each call (CPython 3.11
# compiles ``TOPICS.get(x)`` so for a name an import made: 1.8 % of the audit's instructions).
_known_topic = TOPICS.get
_known_applier = APPLIERS.get
_new = object.__new__

_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


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
        max_time_skew: float = MAX_TIME_SKEW_SECONDS,
    ) -> None:
        self.positions = positions
        self.max_time_skew = max_time_skew
        """Seconds an event's own time may be from its recorded time (``inf``: not judged,
        for tests whose clocks are set apart from the database's)."""
        self._window_from, self._window_to = 1, 0  # none yet (``_timed``)
        self._earliest = self._latest = _EARLIEST
        self.snapshots = snapshots
        self.checkpoints = checkpoints
        self.mapper = MsgspecMapper()
        self.streams: dict[bytes, Stream] = {}
        """By the id's bytes: asyncpg's UUID hashes through an int it makes each time (~2,200
        instructions, 3 % of an event's replay), a new bytes object through 16 bytes."""
        self.findings: list[Finding] = []
        self.credited: dict[str, list[tuple[str, int, int]]] = {}
        self.hold_status: dict[str, ViewRow] = {}
        self.grant_rows: dict[str, ViewRow] = {}
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

    def replay(self, row: AuditedRow) -> None:
        """Replay and check one event, given as its row's values (``AuditedRow``); each
        stream's events come in position order.

        The fields are the row's, unpacked once: the ``AuditedEvent`` is made only where
        something names it (a finding, a check of its own, the mapper's general path, a
        checkpoint). Made for every event and its fields read as attributes, it cost ~900
        instructions an event more (bench.verify_instructions)."""
        originator_id, version, topic, state, position, microseconds, stored_hash, hidden_by = row
        if hidden_by is not None:
            self._hidden(AuditedEvent(*row), hidden_by)
        id_bytes = originator_id.bytes
        stream = self.streams.get(id_bytes)
        if stream is None:
            stream = Stream(originator_id, id_bytes, position)
            self.streams[id_bytes] = stream
            stream.snapshots = self.snapshots.pop(originator_id, None)
        elif position > self._lowest_view_position and isinstance(stream.aggregate, CreditAccount):
            self._freeze_figures_before(stream, position)
        prefixed_topic, shape, owner, method = _known_topic(topic) or topic_of(topic)
        previous_hash, previous_version = stream.hash, stream.version
        in_sequence = version == previous_version + 1
        previous_time, stream.recorded_microseconds = stream.recorded_microseconds, microseconds
        stream.version, stream.hash = version, stored_hash
        # event_hash_at(), written out: the id's bytes are the stream's, made once.
        expected = _sha256(
            b"".join(
                (
                    previous_hash,
                    _pack_fixed_fields(id_bytes, version, microseconds),
                    prefixed_topic,
                    state,
                )
            )
        ).digest()
        if self.checkpoints:
            event = AuditedEvent(*row)
            for checkpoint in self.checkpoints:
                checkpoint.observe(event, expected)
        if not in_sequence:
            self._find(
                "version-gap",
                f"version {version} follows version {previous_version}: "
                "events are missing or repeated"
                + ("; the stream's later events are not replayed" if stream.replayable else ""),
                stream,
                AuditedEvent(*row),
            )
            stream.replayable = False
        replayed = None
        if stream.replayable:
            try:
                # The mapper's fast path, found with the topic and its steps written out as
                # ``ledger.store.mapper._fast_decoder`` takes them (no cache wrapper, no frame:
                # ~360 instructions an event): the general path when it has none or does not
                # fit.
                domain_event: Any = None
                if shape is not None:
                    decode_state, current, every, defaults, cls, set_dict = shape
                    try:
                        values = decode_state(state)
                    except msgspec.ValidationError:
                        values = None  # the general path decides, and says what is wrong
                    if values is not None and values.pop("class_version", 1) == current:
                        if len(values) != every:  # some fields with a default are not there
                            for field, default in defaults:
                                if field not in values:
                                    values[field] = default()
                        values["originator_id"] = originator_id
                        values["originator_version"] = version
                        domain_event = _new(cls)
                        set_dict(domain_event, values)  # past the frozen __setattr__
                if domain_event is None:  # an older shape to upcast, or no fast path
                    domain_event = self.mapper.to_domain_event(AuditedEvent(*row))
                    # The topic's applier is the fast decoder's class's: this one's, by class.
                    owner, method = _known_applier(type(domain_event)) or applier_of(
                        type(domain_event)
                    )
                kind = type(domain_event)
                if kind is MonthlyAllowanceReset:
                    self._check_reset(stream, AuditedEvent(*row), domain_event)
                elif kind in _SETTLEMENT_FIGURES:
                    self._check_settlement(stream, AuditedEvent(*row), domain_event)
                elif kind in _MAY_OVERDRAW:
                    stream.claimed[CLAIMED[kind]] += 1  # counted here: no lookup for others
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
                        self._check_taken(stream, AuditedEvent(*row), domain_event)
                    elif topup or grants:
                        # Taken from the allowance alone, it had that much free (or it is a
                        # negative-allowance): the burn order is judged only past it.
                        self._check_burn_order(stream, AuditedEvent(*row), domain_event)
                    if kind is HoldPlaced:
                        self._check_hold_is_new(stream, AuditedEvent(*row), domain_event)
                elif kind is CheckoutPaid:
                    self._check_payment(stream, AuditedEvent(*row), domain_event)
                elif kind is CreditsGranted:
                    self._check_grant(stream, AuditedEvent(*row), domain_event)
                aggregate = stream.aggregate
                if type(aggregate) is owner:
                    # The library's mutate() without its two checks, which hold here: the
                    # aggregate is this stream's (by id) and at the version before this one
                    # (in_sequence, or the stream stopped replaying); and the method its
                    # evolve() calls: a frame less.
                    method(aggregate, domain_event)
                    aggregate._version = version
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
                    AuditedEvent(*row),
                )
                stream.replayable = False
                replayed = None
            else:
                stream.aggregate = replayed
        if previous_time is not None and microseconds < previous_time:
            event = AuditedEvent(*row)
            self._find(
                "recorded-out-of-order",
                f"recorded at {_when(event.recorded_at)}, before version {previous_version} "
                f"of its stream ({_when(postgres_moment(previous_time))}): appends record their "
                "time in order, so it was written into the stream's past (or the database "
                "server's clock stepped back)",
                stream,
                event,
            )
        if in_sequence and stored_hash != expected:
            self._find(
                "hash-mismatch",
                f"{event_type_name(topic)} was changed after it was written: its "
                f"stored hash is {stored_hash.hex()[:16]}…, its content hashes to "
                f"{expected.hex()[:16]}…",
                stream,
                AuditedEvent(*row),
            )
        if replayed is not None:
            # The checks of the event applied, written out here rather than in a method of
            # their own: a frame fewer for every event (~680 instructions of ~53,270,
            # bench.verify_instructions); a Checkout session's, a few in a hundred, have one.
            # The event's own time, which its command was judged at, against the database's:
            # compared with the bounds that hold for any event recorded in the window of
            # ``_timed``, made again only when an event is recorded past it; exactly only where
            # those bounds do not settle it. ~1,150 instructions an event (2.1 %,
            # bench.verify_instructions); a datetime's arithmetic for every event cost ~3,150.
            if not self._window_from <= microseconds < self._window_to:
                self._timed(microseconds)
            own_time = domain_event.timestamp
            try:
                near = self._earliest <= own_time <= self._latest
            except TypeError:  # a time with no offset, which a stored event may hold
                near = False
            if not near:
                self._check_time(stream, AuditedEvent(*row), own_time, microseconds)
            aggregate = replayed
            if isinstance(aggregate, CreditAccount):
                # Of the allowance, what open holds reserve (and resets kept for them) is not
                # free: a spend or hold recorded as taking it, parts adding up and credits to
                # spare, made credits (the reset carries the share whole). ``free_allowance``,
                # written out, and only with holds open (resets keep nothing for held top-ups
                # but while they are): most accounts have none, and a replay checks every event.
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
                        AuditedEvent(*row),
                    )
                if kind in _MAY_OVERDRAW:
                    # ``available``, written out: the property's call cost every spend and hold
                    # ~1,200 instructions (bench.verify_instructions).
                    held = aggregate.held_totals.held
                    available = remaining + aggregate.granted + aggregate.topup_balance - held
                    if available < 0:
                        self._find(
                            "overdrawn",
                            f"a {'hold' if kind is HoldPlaced else 'spend'} left {available} "
                            "credits available",
                            stream,
                            AuditedEvent(*row),
                        )
                if kind is CreditsSpent:  # nearly every event: its attribute, with no call
                    touched = domain_event.from_grants
                else:
                    grants_of = _GRANTS_TOUCHED.get(kind)
                    touched = grants_of(domain_event) if grants_of is not None else None
                if touched:
                    self._check_grants(stream, AuditedEvent(*row), domain_event, touched)
                if kind in _HOLD_STATUS and position <= self.positions.get("holds", 0):
                    self._hold_row(aggregate.account_id, AuditedEvent(*row), domain_event)
                if kind is CreditsPurchased:
                    self.credited.setdefault(domain_event.session_id, []).append(
                        (aggregate.account_id, domain_event.credits, position)
                    )
                elif kind in _TAKEN_BACK:
                    self._account_took_back(aggregate.account_id, domain_event, AuditedEvent(*row))
                head = _LINE_HEADS.get(kind)  # one of STATEMENT_EVENTS
                if head is not None and position <= self._statement_at:
                    # The statement line the event makes (its buckets are the account's
                    # after it), in bytes as ``_STATEMENT_DIGESTS`` packs the view's; written
                    # out here, not a function of its own: nearly every event makes one.
                    stream.statement_lines += 1
                    a0, t0, g0 = stream.statement_after
                    a1, t1, g1 = stream.statement_after = (
                        aggregate.allowance_remaining,
                        aggregate.topup_balance,
                        aggregate.granted,
                    )
                    da, dt, dg = a1 - a0, t1 - t0, g1 - g0
                    pack, name, describe = head
                    # description_of(), written out, and a spend's (nearly every line's)
                    # without the call of its lambda in ``DESCRIPTIONS``.
                    description = (
                        (domain_event.reason or SPENT)
                        if kind is CreditsSpent
                        else describe(domain_event)
                    )
                    if "\x00" in description:  # as_text(), written out: a call a line fewer
                        description = as_text(description)
                    try:
                        line = (
                            pack(
                                position,
                                version,
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
                            AuditedEvent(*row),
                        )
                        line = b"a line no view holds"
                    if stream.statement_digest is None:
                        # A digest, not a seal.
                        stream.statement_digest = hashlib.md5(line)  # noqa: S324
                    else:
                        stream.statement_digest.update(line)
            elif isinstance(aggregate, CheckoutSession):
                self._follow_session(stream, AuditedEvent(*row), domain_event, kind)
        snapshot = stream.snapshots.pop(version, None) if stream.snapshots else None
        if snapshot is not None and replayed is not None:  # else reported as unreadable
            self._check_snapshot(stream, AuditedEvent(*row), snapshot)

    def _timed(self, microseconds: int) -> None:
        """Bounds for the own times of events recorded from ``microseconds`` on, for half the
        allowed skew: a time between them is within the skew of any moment in that window."""
        skew = self.max_time_skew
        if skew == math.inf:
            self._window_from, self._window_to = -(2**63), 2**63
            self._earliest, self._latest = _EARLIEST, _LATEST
            return
        allowed = int(skew * 1_000_000)
        self._window_from, self._window_to = microseconds, microseconds + max(allowed // 2, 1)
        self._earliest = postgres_moment(self._window_to - allowed)
        self._latest = postgres_moment(microseconds + allowed)

    def _check_time(
        self, stream: Stream, event: ReplayedEvent, own_time: datetime, microseconds: int
    ) -> None:
        """``time-far-from-record`` if the event's own time is further than the skew allowed
        from its recorded time (``microseconds``)."""
        if own_time.tzinfo is None:
            self._find(
                "time-far-from-record",
                f"{event_type_name(event.topic)} tells the time {_when(own_time)}, with no "
                "offset: no moment to hold to the time the database recorded it "
                f"({_when(event.recorded_at)}), and the domain compares it with times that "
                "have one",
                stream,
                event,
            )
            return
        apart = (postgres_microseconds(own_time) - microseconds) / 1_000_000
        if apart > self.max_time_skew or -apart > self.max_time_skew:
            self._time_far(stream, event, own_time, apart)

    def _time_far(
        self, stream: Stream, event: ReplayedEvent, own_time: datetime, apart: float
    ) -> None:
        way = "ahead of" if apart > 0 else "behind"
        self._find(
            "time-far-from-record",
            f"{event_type_name(event.topic)} tells the time {_when(own_time)}, "
            f"{duration_in_one_unit(abs(apart))} {way} when the database recorded it "
            f"({_when(event.recorded_at)}), more than the {self.max_time_skew:g} s allowed "
            "(--max-time-skew): its command was judged at that time (the expiries due, the "
            "grants a spend may use, the burn order)"
            + (
                ", and so were its stream's later commands until that time came (a stream's "
                "times never go back)"
                if apart > 0
                else ""
            ),
            stream,
            event,
        )

    def _hidden(self, event: ReplayedEvent, transaction_id: str) -> None:
        """Keep the first few hidden events (they come in position order) and count all."""
        self.hidden_count += 1
        self.last_hidden = event.notification_id
        if len(self.hidden) < HIDDEN_SHOWN:
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
            Settled(
                _HOLD_STATUS[type(settled)],
                settled.captured if isinstance(settled, HoldCaptured) else 0,
                settled.released,
            ),
        )
        hold = account.holds.get(settled.hold_id)
        if type(settled) is HoldExpired and hold and not hold.has_expired(settled.timestamp):
            # Recorded only once due (``expire_hold``), at the time judged due: one before
            # gives the credits back with no release asked, and its capture is refused.
            self._find(
                "hold-expired-early",
                f"hold {settled.hold_id} expires at {_when(hold.due_at)}, its expiry was "
                f"recorded at {settled.timestamp.isoformat()}",
                stream,
                event,
            )
        captured = settled.captured if isinstance(settled, HoldCaptured) else 0
        if hold is None or not 0 <= captured <= hold.amount:
            kept = "is not open" if hold is None else f"keeps {hold.amount} credits"
            detail = f"captured {captured} of hold {settled.hold_id}, which {kept}"
        else:
            rule = _spending_less_kept(
                account, hold, account.settlement(settled.hold_id, captured), settled
            )
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
        """A spend or a hold of less than 1 credit (``CreditAccount.split`` refuses it, as
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

    def _check_burn_order(self, stream: Stream, event: ReplayedEvent, taken: Any) -> None:
        """A spend or hold takes the free allowance first, then the grants usable at its time
        in burn order (lowest priority, soonest expiry, oldest), then top-ups
        (``CreditAccount.split``, the rule since spends were first recorded). Another split,
        its parts adding up, moves credits between buckets that do not last alike: the
        allowance lapses at a reset, a grant at its expiry, top-ups never. Judged on the
        account before it; one that took more of the allowance or of a grant than was free,
        used a closed or expired grant, or more than is available is reported as that."""
        account = stream.aggregate
        if not isinstance(account, CreditAccount):
            return  # reported as unreadable, or a spend on another stream
        free = max(account.free_allowance, 0)
        if taken.from_allowance == free and not account.grants:
            return  # the allowance exhausted first, and no grant to pass over
        at = taken.timestamp
        if taken.from_allowance > free or any(
            (grant := account.grants.get(grant_id)) is None
            or not grant.usable_at(at)
            or credits > account.free_of_grant(grant_id)
            for grant_id, credits in taken.from_grants.items()
        ):
            return
        try:
            allowance, grants, topup = account.split(taken.amount, at)
        except DomainError:
            return
        if (taken.from_allowance, taken.from_grants, taken.from_topup) == (
            allowance,
            grants,
            topup,
        ):
            return
        what = "hold" if isinstance(taken, HoldPlaced) else "spend"
        self._find(
            "burn-order",
            f"a {what} of {taken.amount} took {taken.from_allowance} from the allowance, "
            f"{taken.from_grants!r} from grants and {taken.from_topup} from top-ups; the burn "
            f"order (the free allowance, then grants by priority, expiry and age, then top-ups) "
            f"takes {allowance}, {grants!r} and {topup}",
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

    def _follow_session(
        self, stream: Stream, event: ReplayedEvent, domain_event: Any, kind: type
    ) -> None:
        """What a Checkout session's event changes of what the checks across streams and
        the purchases view are given, after it is applied."""
        aggregate = stream.aggregate
        if kind in _BEFORE_ADJUSTMENTS:
            stream.older_disputes = True
        if kind in _MOVES_CREDITS:
            for n, moved in enumerate(MOVED):
                stream.moved[n] += getattr(domain_event, moved, 0)
        if kind is CheckoutRequested:
            stream.requested_at = event.recorded_at
            if not MIN_CREDITS <= domain_event.credits <= MAX_CREDITS:
                self._check_credits(stream, event, domain_event)
        elif kind is CheckoutPaid and stream.paid_at is None:
            stream.paid_at = event.recorded_at
        if changes_purchase(domain_event):
            stream.updated_at = event.recorded_at
        if event.notification_id <= self.positions.get("purchases", 0):
            stream.purchase_status = purchase_at(aggregate, stream)

    def _check_credits(
        self, stream: Stream, event: ReplayedEvent, requested: CheckoutRequested
    ) -> None:
        """A session requested by the service is of ``MIN_CREDITS`` to ``MAX_CREDITS``
        (refused before Stripe is asked, since the first session was recorded); one rebuilt
        from a paid session's metadata (``recovered``) of 1 or more. A version 1 event reads
        as requested, its upcast setting ``recovered`` false also of sessions recovered before
        version 2 kept the flag: it is held to 1 or more."""
        credits = requested.credits
        if requested.recovered or stored_version(event.state) < 2:
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
            stream.claimed[CLAIMED[kind]] += 1
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
        known.moved[moved_by(domain_event)] += domain_event.credits
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
                excuse_less_repayable(loaded, stream.aggregate)
                excuse_kept_for_later_topups(loaded, stream.aggregate)
            problems = differences(loaded, stream.aggregate)
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
                session_at(s.id, s) for s in streams if isinstance(s.aggregate, CheckoutSession)
            ],
            intents=[
                at
                for s in streams
                if isinstance(s.aggregate, PaymentIntent)
                and (at := intent_at(s.aggregate)) is not None
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
            NO_LINES if stream.statement_digest is None else stream.statement_digest.hexdigest()
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


def _spending_less_kept(
    account: CreditAccount, hold: OpenHold, rule: Settlement, settled: Any
) -> Settlement:
    """The rule's settlement, or one that spends less of what resets kept for held top-ups
    and lets no less of it lapse, as ``settled`` does, the rest of its top-ups from the
    top-ups (its debt repaid by the rule for that): what an account loaded from a snapshot
    that has what was kept stand for later top-ups than the replay records
    (``audit.snapshots.excuse_kept_for_later_topups``), never richer. More spent, or less
    lapsed, is not."""
    kept_spent = getattr(settled, "kept_spent", 0)
    if (kept_spent, settled.kept_lapsed) == (rule.kept_spent, rule.kept_lapsed) or not (
        0 <= kept_spent <= rule.kept_spent and settled.kept_lapsed >= rule.kept_lapsed
    ):
        return rule
    less_kept = msgspec.structs.replace(
        rule,
        from_topup=rule.from_topup + rule.kept_spent - kept_spent,
        kept_spent=kept_spent,
        kept_lapsed=settled.kept_lapsed,
        debt_repaid=0,
    )
    return repaying(
        less_kept,
        topup_balance=account.topup_balance,
        repayable=repayable_by(account.carried_repayable, hold.period),
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


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat()


_GRANTS_TOUCHED: dict[type, Callable[[Any], Collection[str]]] = {
    CreditsGranted: lambda granted: [granted.grant_id],
    GrantExpired: lambda expired: [expired.grant_id],
    GrantVoided: lambda voided: [voided.grant_id],
    CreditsSpent: attrgetter("from_grants"),  # read without a call in replay
    HoldPlaced: attrgetter("from_grants"),
    HoldCaptured: lambda captured: captured.from_grants.keys() | captured.grants_lapsed.keys(),
    HoldReleased: attrgetter("grants_lapsed"),
    HoldExpired: attrgetter("grants_lapsed"),
}
"""The grants each kind of account event moves or closes (by class, as ``_HOLD_STATUS``:
a ``match`` of class patterns cost every spend four ``isinstance`` calls): the event's own
dict where its keys are the grants, so a spend that took from none makes no object."""


def _account_of(aggregate: Any) -> str | None:
    return getattr(aggregate, "account_id", None)

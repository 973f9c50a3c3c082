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
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from eventsourcing.persistence import StoredEvent

from audit.checkpoint import CheckpointAudit
from audit.findings import Finding
from ledger.domain.account import CreditAccount
from ledger.domain.adjustments import Worth, taken_back
from ledger.domain.checkout import MISMATCHED, CheckoutSession
from ledger.domain.events import (
    HOLD_SETTLEMENTS,
    STATEMENT_EVENTS,
    CreditsClawedBack,
    CreditsGranted,
    CreditsPurchased,
    CreditsRestored,
    CreditsReversed,
    CreditsSpent,
    DisputeClosed,
    GrantExpired,
    GrantVoided,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldReleased,
    PaymentDisputed,
)
from ledger.domain.grants import ACTIVE, EXPIRED, VOIDED
from ledger.store.event_store import Connection, RecordedEvent
from ledger.store.hash_chain import GENESIS, event_hash
from ledger.store.mapper import MsgspecMapper, event_type_name

CURSOR_PREFETCH = 5000

_HOLD_STATUS: dict[type, str] = {
    HoldPlaced: "held",
    HoldCaptured: "captured",
    HoldReleased: "released",
    HoldExpired: "expired",
}
"""The holds view's status of a hold after each of its events."""
assert set(_HOLD_STATUS) == {HoldPlaced, *HOLD_SETTLEMENTS}
_STATEMENT_EVENTS = frozenset(STATEMENT_EVENTS)
_MAY_OVERDRAW = (CreditsSpent, HoldPlaced)
"""Events refused by the domain when they would leave less than nothing available."""
_TAKEN_BACK: dict[type, int] = {CreditsClawedBack: 1, CreditsReversed: 1, CreditsRestored: -1}
"""Account events that take a purchase's credits back (1) or give them back (-1)."""
_BEFORE_ADJUSTMENTS = (PaymentDisputed, DisputeClosed)
"""Dispute events of the first releases, decided by rules older than ledger/domain/adjustments.py."""
_GRANT_CLOSED: dict[type, str] = {GrantExpired: EXPIRED, GrantVoided: VOIDED}
_NOT_COMPARED = frozenset({"_pending_events"})
"""An aggregate's attributes a snapshot does not keep."""


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


class Stream:
    """What the audit keeps per stream while it replays."""

    __slots__ = (
        "aggregate",
        "at_balances",
        "at_notifications",
        "at_statement",
        "first_position",
        "hash",
        "older_disputes",
        "purchase_status",
        "snapshots",
        "statement_lines",
        "version",
    )

    def __init__(self, first_position: int) -> None:
        self.version = 0
        self.hash = GENESIS
        self.first_position = first_position
        self.statement_lines = 0
        self.aggregate: Any = None
        self.at_balances: AccountAt | None = None
        self.at_notifications: AccountAt | None = None
        self.at_statement: AccountAt | None = None
        self.purchase_status: PurchaseAt | None = None
        self.snapshots: dict[int, StoredSnapshot] | None = None
        self.older_disputes = False


class PurchaseAt(msgspec.Struct, frozen=True):
    """A purchase's row as the purchases view should show it."""

    status: str
    needs_review: bool
    amount_refunded: int
    credits_clawed_back: int
    credits_reversed: int


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
    other_accounts: set[str] = msgspec.field(default_factory=set)


class Report(msgspec.Struct):
    """The audit's outcome."""

    events: int
    streams: int
    accounts: int
    checkout_sessions: int
    snapshots: int
    seconds: float
    events_per_second: float
    projection_positions: dict[str, int]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.findings


class Verifier:
    """One audit run over one consistent snapshot of the database."""

    def __init__(self, connection: Connection, checkpoints: Sequence[CheckpointAudit] = ()) -> None:
        self.connection = connection
        self.checkpoints = checkpoints
        self.mapper = MsgspecMapper()
        self.streams: dict[UUID, Stream] = {}
        self.findings: list[Finding] = []
        self.credited: dict[str, list[tuple[str, int, int]]] = {}
        self.positions: dict[str, int] = {}
        self.hold_status: dict[str, tuple[str, str]] = {}
        self.grant_rows: dict[str, tuple[str, int, str]] = {}
        """Each grant's (account, remaining, status) at the grants view's position."""
        self.closed_grants: dict[tuple[UUID, str], str] = {}
        self.taken_back: dict[str, GivenBack] = {}
        self.snapshots: dict[UUID, dict[int, StoredSnapshot]] = {}

    async def run(self, on_progress: Callable[[int], None] = lambda _: None) -> Report:
        """Replay, check, compare; ``on_progress(n)`` after every n events."""
        started = time.perf_counter()
        rows = await self.connection.fetch("SELECT name, position FROM projection_positions")
        self.positions = {r["name"]: r["position"] for r in rows}
        snapshots = await self._read_snapshots()
        count = 0
        cursor = await self.connection.cursor(
            """SELECT originator_id, originator_version, topic, state, notification_id,
                      recorded_at, hash
               FROM stored_events ORDER BY notification_id"""
        )
        next_rows = asyncio.ensure_future(cursor.fetch(CURSOR_PREFETCH))
        while rows := await next_rows:
            # Ask for the next batch before replaying this one: the server reads and
            # sends it while this process is busy replaying.
            next_rows = asyncio.ensure_future(cursor.fetch(CURSOR_PREFETCH))
            await asyncio.sleep(0)
            for row in rows:
                self._replay(RecordedEvent(*row))
            count += len(rows)
            on_progress(len(rows))
        for checkpoint in self.checkpoints:
            self.findings.extend(checkpoint.findings(self._account_of_stream))
        self._final_figures()
        self._check_purchases()
        self._check_adjustments()
        self._check_snapshots_left()
        await self._check_balances_view()
        await self._check_purchases_view()
        await self._check_statement_view()
        await self._check_holds_view()
        await self._check_grants_view()
        await self._check_notifier_view()
        seconds = time.perf_counter() - started
        accounts = [s for s in self.streams.values() if isinstance(s.aggregate, CreditAccount)]
        return Report(
            events=count,
            streams=len(self.streams),
            accounts=len(accounts),
            checkout_sessions=sum(
                isinstance(s.aggregate, CheckoutSession) for s in self.streams.values()
            ),
            snapshots=snapshots,
            seconds=round(seconds, 3),
            events_per_second=round(count / seconds, 1) if seconds else 0.0,
            projection_positions=self.positions,
            findings=self.findings,
        )

    def _find(self, kind: str, detail: str, stream: Stream | None, event: RecordedEvent) -> None:
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

    def _account_of_stream(self, stream_id: UUID) -> str | None:
        stream = self.streams.get(stream_id)
        return _account_of(stream.aggregate) if stream else None

    def _replay(self, event: RecordedEvent) -> None:
        stream = self.streams.get(event.originator_id)
        if stream is None:
            stream = self.streams[event.originator_id] = Stream(event.notification_id)
            stream.snapshots = self.snapshots.pop(event.originator_id, None)
        elif isinstance(stream.aggregate, CreditAccount):
            self._freeze_figures_before(stream, event.notification_id)
        previous_hash, previous_version = stream.hash, stream.version
        in_sequence = event.originator_version == previous_version + 1
        stream.version, stream.hash = event.originator_version, event.hash
        expected = event_hash(
            previous_hash,
            event.originator_id,
            event.originator_version,
            event.recorded_at,
            event.topic,
            event.state,
        )
        for checkpoint in self.checkpoints:
            checkpoint.observe(event, expected)
        try:
            domain_event = self.mapper.to_domain_event(event)
            replayed = domain_event.mutate(stream.aggregate)
        except Exception as error:  # a tampered row may not even decode
            self._find("unreadable", f"cannot replay the event: {error}", stream, event)
            replayed = None
        else:
            stream.aggregate = replayed
        if not in_sequence:
            self._find(
                "version-gap",
                f"version {event.originator_version} follows version {previous_version}: "
                "events are missing or repeated",
                stream,
                event,
            )
        elif event.hash != expected:
            self._find(
                "hash-mismatch",
                f"{event_type_name(event.topic)} was changed after it was written: its "
                f"stored hash is {event.hash.hex()[:16]}…, its content hashes to "
                f"{expected.hex()[:16]}…",
                stream,
                event,
            )
        if replayed is not None:
            self._check_event(stream, event, domain_event)
        snapshot = (
            stream.snapshots.pop(event.originator_version, None) if stream.snapshots else None
        )
        if snapshot is not None and replayed is not None:  # else reported as unreadable
            self._check_snapshot(stream, event, snapshot)

    def _check_event(self, stream: Stream, event: RecordedEvent, domain_event: Any) -> None:
        aggregate = stream.aggregate
        kind = type(domain_event)
        if isinstance(aggregate, CreditAccount):
            if aggregate.allowance_remaining < 0:
                self._find(
                    "negative-allowance",
                    f"allowance {aggregate.allowance_remaining}",
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
            touched = _grants_touched(domain_event)
            if touched:
                self._check_grants(stream, event, domain_event, touched)
            if kind in _HOLD_STATUS and event.notification_id <= self.positions.get("holds", 0):
                self.hold_status[domain_event.hold_id] = (aggregate.account_id, _HOLD_STATUS[kind])
            if kind is CreditsPurchased:
                self.credited.setdefault(domain_event.session_id, []).append(
                    (aggregate.account_id, domain_event.credits, event.notification_id)
                )
            elif kind in _TAKEN_BACK:
                self._account_took_back(aggregate.account_id, domain_event, event)
            if kind in _STATEMENT_EVENTS and event.notification_id <= self.positions.get(
                "statement", 0
            ):
                stream.statement_lines += 1
        elif isinstance(aggregate, CheckoutSession):
            if kind in _BEFORE_ADJUSTMENTS:
                stream.older_disputes = True
            if event.notification_id <= self.positions.get("purchases", 0):
                stream.purchase_status = _purchase_at(aggregate)

    def _check_grants(
        self, stream: Stream, event: RecordedEvent, domain_event: Any, touched: list[str]
    ) -> None:
        """Grants close once, never after their expiry is used, and never go below zero."""
        account: CreditAccount = stream.aggregate
        kind = type(domain_event)
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
            if grant is not None and account.free_of_grant(grant_id) < 0:
                self._find(
                    "grant-overdrawn",
                    f"took more than grant {grant_id} had: {account.free_of_grant(grant_id)} "
                    "of it left",
                    stream,
                    event,
                )
            if event.notification_id <= self.positions.get("grants", 0):
                self.grant_rows[grant_id] = (
                    (account.account_id, grant.remaining, grant.status)
                    if grant is not None
                    else (
                        account.account_id,
                        0,
                        self.closed_grants.get((event.originator_id, grant_id), "closed"),
                    )
                )

    def _account_took_back(self, account_id: str, domain_event: Any, event: RecordedEvent) -> None:
        credits = _TAKEN_BACK[type(domain_event)] * domain_event.credits
        known = self.taken_back.get(domain_event.session_id)
        if known is None:
            known = GivenBack(account_id, 0, event.notification_id)
            self.taken_back[domain_event.session_id] = known
        elif known.account_id != account_id:
            known.other_accounts.add(account_id)
        known.credits += credits
        known.position = event.notification_id

    def _freeze_figures_before(self, stream: Stream, position: int) -> None:
        """Keep an account's figures as a view saw them: before its first event past the view.

        Figures are taken only where a view's position falls inside a stream;
        streams a view has read entirely get theirs from the final state, once.
        """
        for view in ("balances", "notifications", "statement"):
            at = self.positions.get(view, 0)
            attribute = f"at_{view}"
            if stream.first_position <= at < position and getattr(stream, attribute) is None:
                setattr(stream, attribute, _figures(stream.aggregate, stream.statement_lines))

    def _final_figures(self) -> None:
        for stream in self.streams.values():
            if isinstance(stream.aggregate, CreditAccount):
                self._freeze_figures_before(stream, position=2**63)

    def _check_purchases(self) -> None:
        sessions = {
            s.aggregate.session_id: s.aggregate
            for s in self.streams.values()
            if isinstance(s.aggregate, CheckoutSession)
        }
        for session_id, credits in self.credited.items():
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

    def _check_adjustments(self) -> None:
        """What refunds and disputes took back of each purchase: by the rule, and on its account.

        Sessions disputed under the first releases' rules (``PaymentDisputed``,
        ``DisputeClosed``) kept what those rules decided: only their account is checked.
        """
        for stream_id, stream in self.streams.items():
            session = stream.aggregate
            if not isinstance(session, CheckoutSession):
                continue
            took = session.credits_clawed_back + session.credits_reversed
            given = self.taken_back.pop(session.session_id, None)
            problems = []
            if not stream.older_disputes:
                rule = (
                    taken_back(
                        session.credits, session.amount, session.amount_refunded, session.disputes
                    )
                    if session.paid
                    else Worth(0, 0)
                )
                if took != rule.refunded + rule.disputed:
                    problems.append(
                        f"its refunds and disputes took back {took} credits "
                        f"({session.credits_clawed_back} refunded, {session.credits_reversed} "
                        f"disputed), its facts {rule.refunded + rule.disputed} ({rule.refunded} "
                        f"refunded, {rule.disputed} disputed)"
                    )
            if (given.credits if given else 0) != took:
                problems.append(
                    f"its account's events took back {given.credits if given else 0} credits, "
                    f"the session {took}"
                )
            if given and (given.account_id != session.account_id or given.other_accounts):
                accounts = ", ".join(sorted({given.account_id, *given.other_accounts}))
                problems.append(f"sold to {session.account_id}, taken back from {accounts}")
            self.findings.extend(
                Finding(
                    kind="adjustment-mismatch",
                    account_id=session.account_id,
                    stream_id=str(stream_id),
                    position=given.position if given else None,
                    detail=f"session {session.session_id}: {problem}",
                )
                for problem in problems
            )
        for session_id, given in self.taken_back.items():
            self.findings.append(
                Finding(
                    kind="adjustment-mismatch",
                    account_id=given.account_id,
                    position=given.position,
                    detail=f"credits taken back for session {session_id}, which was never "
                    "requested",
                )
            )

    async def _read_snapshots(self) -> int:
        """Every snapshot, by stream and version, to compare with the replay as it passes."""
        rows = await self.connection.fetch(
            """SELECT originator_id, originator_version, topic, state, event_recorded_at
               FROM snapshots"""
        )
        for row in rows:
            snapshot = StoredSnapshot(*row)
            by_version = self.snapshots.setdefault(snapshot.originator_id, {})
            by_version[snapshot.originator_version] = snapshot
        return len(rows)

    def _check_snapshot(
        self, stream: Stream, event: RecordedEvent, snapshot: StoredSnapshot
    ) -> None:
        """A snapshot is what the stream's events make at its version, decoded as loads do."""
        try:
            stored = StoredEvent(
                originator_id=snapshot.originator_id,
                originator_version=snapshot.originator_version,
                topic=snapshot.topic,
                state=snapshot.state,
            )
            problems = _differences(
                self.mapper.to_domain_event(stored).mutate(None), stream.aggregate
            )
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
        for stream_id, stream in self.streams.items():
            for version in sorted(stream.snapshots or ()):
                self.findings.append(
                    Finding(
                        kind="snapshot-mismatch",
                        account_id=_account_of(stream.aggregate),
                        stream_id=str(stream_id),
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

    async def _check_balances_view(self) -> None:
        await self._check_account_rows(
            "balances",
            """SELECT account_id, monthly_allowance, allowance_remaining, topup_balance, held,
                      period, granted
               FROM balances""",
        )

    async def _check_notifier_view(self) -> None:
        """The alerts' own copy of each account's buckets and threshold."""
        await self._check_account_rows(
            "notifications",
            """SELECT account_id, monthly_allowance, allowance_remaining, topup_balance, held,
                      threshold, granted
               FROM notifier_accounts""",
        )

    async def _check_account_rows(self, view: str, query: str) -> None:
        """Compare a view's row per account, field by field, with the replay at its position."""
        expected = {
            s.aggregate.account_id: at
            for s in self.streams.values()
            if (at := getattr(s, f"at_{view}")) is not None
        }
        for row in await self.connection.fetch(query):
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

    async def _check_purchases_view(self) -> None:
        expected = {
            s.aggregate.session_id: (s.aggregate.account_id, s.purchase_status)
            for s in self.streams.values()
            if s.purchase_status is not None
        }
        fields = PurchaseAt.__struct_fields__
        for row in await self.connection.fetch(
            f"SELECT session_id, account_id, {', '.join(fields)} FROM purchases"
        ):
            account_id, want = expected.pop(row["session_id"], (row["account_id"], None))
            if want is None:
                self._view_finding(
                    "purchases", account_id, f"session {row['session_id']} was never requested"
                )
                continue
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

    async def _check_statement_view(self) -> None:
        expected = {
            s.aggregate.account_id: s.at_statement
            for s in self.streams.values()
            if s.at_statement is not None
        }
        rows = await self.connection.fetch(
            """SELECT account_id, count(*) AS lines,
                      (array_agg(balance_after ORDER BY position DESC))[1] AS balance_after
               FROM statement_lines GROUP BY account_id"""
        )
        for row in rows:
            want = expected.pop(row["account_id"], None)
            if want is None:
                self._view_finding("statement", row["account_id"], "lines for no account")
            elif (row["lines"], row["balance_after"]) != (want.statement_lines, want.balance):
                self._view_finding(
                    "statement",
                    row["account_id"],
                    f"{row['lines']} lines ending at balance {row['balance_after']} in the view, "
                    f"{want.statement_lines} lines ending at {want.balance} replayed",
                )
        for account_id in expected:
            self._view_finding("statement", account_id, "the account has no lines")

    async def _check_holds_view(self) -> None:
        expected = dict(self.hold_status)
        for row in await self.connection.fetch("SELECT hold_id, status FROM holds"):
            account_id, want = expected.pop(row["hold_id"], ("", None))
            if want != row["status"]:
                self._view_finding(
                    "holds",
                    account_id,
                    f"hold {row['hold_id']} is {row['status']} in the view, {want} replayed",
                )
        for hold_id, (account_id, _) in expected.items():
            self._view_finding("holds", account_id, f"hold {hold_id} is missing")

    async def _check_grants_view(self) -> None:
        expected = dict(self.grant_rows)
        for row in await self.connection.fetch("SELECT grant_id, remaining, status FROM grants"):
            account_id, *want = expected.pop(row["grant_id"], ("", None, None))
            if want != [row["remaining"], row["status"]]:
                replayed = "missing" if want[1] is None else f"{want[1]} with {want[0]} left"
                self._view_finding(
                    "grants",
                    account_id,
                    f"grant {row['grant_id']} is {row['status']} with {row['remaining']} left "
                    f"in the view, {replayed} replayed",
                )
        for grant_id, (account_id, _, _) in expected.items():
            self._view_finding("grants", account_id, f"grant {grant_id} is missing")

    def _view_finding(self, view: str, account_id: str, detail: str) -> None:
        self.findings.append(
            Finding(
                kind=f"{view}-view",
                account_id=account_id,
                detail=f"{detail} (view at position {self.positions.get(view, 0)})",
            )
        )


def _figures(account: CreditAccount, lines: int) -> AccountAt:
    return AccountAt(
        monthly_allowance=account.monthly_allowance,
        allowance_remaining=account.allowance_remaining,
        topup_balance=account.topup_balance,
        granted=account.granted,
        held=account.held,
        threshold=account.__dict__.get("low_balance_threshold"),
        period=account.period,
        statement_lines=lines,
        balance=account.balance,
    )


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


def _purchase_at(session: CheckoutSession) -> PurchaseAt:
    mismatched = session.status == MISMATCHED
    return PurchaseAt(
        status="pending" if mismatched else session.status,
        needs_review=mismatched,
        amount_refunded=session.amount_refunded,
        credits_clawed_back=session.credits_clawed_back,
        credits_reversed=session.credits_reversed,
    )


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat()


def _grants_touched(event: object) -> list[str]:
    """The grants an account event moves or closes."""
    match event:
        case CreditsGranted() | GrantExpired() | GrantVoided():
            return [event.grant_id]
        case CreditsSpent() | HoldPlaced():
            return list(event.from_grants)
        case HoldCaptured():
            return list(event.from_grants.keys() | event.grants_lapsed.keys())
        case HoldReleased() | HoldExpired():
            return list(event.grants_lapsed)
    return []


def _account_of(aggregate: Any) -> str | None:
    return getattr(aggregate, "account_id", None)


async def verify(
    pool: asyncpg.Pool,
    on_progress: Callable[[int], None] = lambda _: None,
    checkpoints: Sequence[CheckpointAudit] = (),
) -> Report:
    """Run the whole audit in one consistent, read-only snapshot.

    Each of ``checkpoints`` also sees every event and adds what disagrees with it.
    """
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        return await Verifier(connection, checkpoints).run(on_progress)

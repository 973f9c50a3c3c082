"""``ledger audit verify``: replay every event and prove the ledger right.

Everything is read in one REPEATABLE READ snapshot, so the events, the views
and their positions agree with each other. Events stream through a server-side
cursor in commit order: memory grows with the number of streams (accounts and
Checkout sessions), never with the number of events.

Balances are recomputed through the domain's own aggregates, not through the
projections' code, so a bug in either shows up as a disagreement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from audit.checkpoint import CheckpointAudit
from audit.findings import Finding
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import MISMATCHED, CheckoutSession
from ledger.store.event_store import Connection, RecordedEvent
from ledger.store.hash_chain import GENESIS, event_hash
from ledger.store.mapper import MsgspecMapper, event_type_name

CURSOR_PREFETCH = 5000

# Events that make a statement line (the statement view's contract with auditors).
STATEMENT_EVENTS = frozenset(
    {
        "AccountOpened",
        "CreditsSpent",
        "MonthlyAllowanceReset",
        "CreditsPurchased",
        "CreditsClawedBack",
        "CreditsReversed",
        "CreditsRestored",
        "HoldPlaced",
        "HoldCaptured",
        "HoldReleased",
        "HoldExpired",
    }
)
_HOLD_STATUS = {
    "HoldPlaced": "held",
    "HoldCaptured": "captured",
    "HoldReleased": "released",
    "HoldExpired": "expired",
}


class AccountAt(msgspec.Struct):
    """An account's figures at a projection's position."""

    monthly_allowance: int = 0
    allowance_remaining: int = 0
    topup_balance: int = 0
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
        "purchase_status",
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
        self.purchase_status: tuple[str, bool] | None = None


class Report(msgspec.Struct):
    """The audit's outcome."""

    events: int
    streams: int
    accounts: int
    checkout_sessions: int
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

    async def run(self, on_progress: Callable[[int], None] = lambda _: None) -> Report:
        """Replay, check, compare; ``on_progress(n)`` after every n events."""
        started = time.perf_counter()
        rows = await self.connection.fetch("SELECT name, position FROM projection_positions")
        self.positions = {r["name"]: r["position"] for r in rows}
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
        await self._check_balances_view()
        await self._check_purchases_view()
        await self._check_statement_view()
        await self._check_holds_view()
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
            self._check_event(stream, event, event_type_name(event.topic), domain_event)

    def _check_event(
        self, stream: Stream, event: RecordedEvent, kind: str, domain_event: Any
    ) -> None:
        aggregate = stream.aggregate
        if isinstance(aggregate, CreditAccount):
            if aggregate.allowance_remaining < 0:
                self._find(
                    "negative-allowance",
                    f"allowance {aggregate.allowance_remaining}",
                    stream,
                    event,
                )
            if kind in ("CreditsSpent", "HoldPlaced") and aggregate.available < 0:
                self._find(
                    "overdrawn",
                    f"a {'hold' if kind == 'HoldPlaced' else 'spend'} left {aggregate.available} "
                    "credits available",
                    stream,
                    event,
                )
            if kind in _HOLD_STATUS and event.notification_id <= self.positions.get("holds", 0):
                self.hold_status[domain_event.hold_id] = (aggregate.account_id, _HOLD_STATUS[kind])
            if kind == "CreditsPurchased":
                self.credited.setdefault(domain_event.session_id, []).append(
                    (aggregate.account_id, domain_event.credits, event.notification_id)
                )
            if kind in STATEMENT_EVENTS and event.notification_id <= self.positions.get(
                "statement", 0
            ):
                stream.statement_lines += 1
        elif isinstance(aggregate, CheckoutSession) and event.notification_id <= self.positions.get(
            "purchases", 0
        ):
            stream.purchase_status = _purchase_status(aggregate)

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

    async def _check_balances_view(self) -> None:
        await self._check_account_rows(
            "balances",
            """SELECT account_id, monthly_allowance, allowance_remaining, topup_balance, held,
                      period
               FROM balances""",
        )

    async def _check_notifier_view(self) -> None:
        """The alerts' own copy of each account's buckets and threshold."""
        await self._check_account_rows(
            "notifications",
            """SELECT account_id, monthly_allowance, allowance_remaining, topup_balance, held,
                      threshold
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
        for row in await self.connection.fetch(
            "SELECT session_id, account_id, status, needs_review FROM purchases"
        ):
            account_id, want = expected.pop(row["session_id"], (row["account_id"], None))
            got = (row["status"], row["needs_review"])
            if want != got:
                self._view_finding(
                    "purchases",
                    account_id,
                    f"session {row['session_id']} is {got} in the view, {want} replayed",
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
        held=account.held,
        threshold=account.__dict__.get("low_balance_threshold"),
        period=account.period,
        statement_lines=lines,
        balance=account.balance,
    )


def _purchase_status(session: CheckoutSession) -> tuple[str, bool]:
    if session.status == MISMATCHED:
        return ("pending", True)
    return (session.status, False)


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

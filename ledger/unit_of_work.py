"""The one road every command takes, from its handler to the commit.

``UnitOfWork.run(handler, command)``:

1. takes the command's lock in this process (commands on one account take turns; one
   that waits ``TURN_WAIT_SECONDS`` for its turn gives up as a conflict that stayed
   does: ``ConcurrencyConflict``, answered 503 with ``Retry-After``, nothing written);
2. loads what the handler asks for (``handler.load``: the cache, else snapshot + events);
3. lets the handler decide (``handler.decide``: a plain function of that state and
   the command, which records events on the aggregates or raises a refusal), every
   event stamped with the command's time (``at``) unless it has its own
   (``ledger.domain.events.command_time``); a stream's times never go back, so a
   decision whose streams told a later time (the command waited for its turn, or is
   decided again after another's commit) is decided again at that time;
4. commits the events and the command's claim (its idempotency key, Stripe event
   id or hold settlement) together, through group commit, with any other keys the
   decision takes (a payment intent's link, ledger/handlers/payments.py);
5. on a version conflict, or one of those other keys taken, loads fresh state and
   decides again (bounded, with jittered backoff); when the claim is taken, or a
   refusal meets a claim already made, answers what the first command answered,
   and says so in ``answer_positions()``'s ``replayed`` (the HTTP edge turns it into
   ``Idempotent-Replayed: true``).

A refusal is never trusted to the cache, nor is a decision to write no event about
the state it judged, with or without a claim (neither meets a version check): each
is decided again on fresh state before it is answered. A failed decision leaves the cache as it was (the handler decided on
copies). Nothing is written for a refusal.

Every answer stands at a position of the store: the position of the last event
its command committed, or, for an answer replayed or decided without writing,
the store's head when it was given (at or after what the answer reflects).
``answer_positions()`` collects them for a caller (an HTTP request) that tells
its client, so that the client can read its own writes from the views
(``Ledger-Position``, docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from ledger.domain.errors import DomainError
from ledger.domain.events import reset_command_time, set_command_time
from ledger.keyed_locks import KeyedLocks, TurnNotCome
from ledger.request_scope import RequestScope, get_current_scope
from ledger.store import stats
from ledger.store.claims import Claim, Claims, ClaimTaken, StoredAnswer, replay
from ledger.store.commit import ClaimRecord, GroupCommitter
from ledger.store.event_store import ConcurrencyConflict
from ledger.store.repository import Repository

C = TypeVar("C")
S = TypeVar("S")
A = TypeVar("A")
G = TypeVar("G", bound=Aggregate)

MAX_ATTEMPTS = 12

MAX_REDECISIONS = 3
"""How often one attempt decides again at the later time a stream it changes told (each
time later: a fresh load may bring another process's newer events); still later after
that, the attempt ends as a conflict would, and the command is decided again after a pause
(never recorded with what it judged at an earlier time than its events tell)."""

TURN_WAIT_SECONDS = 5.0
"""How long a command waits for the commands before it on its account (its lock in this
process) before it is answered as busy: as long as the service's sessions wait for a lock
in PostgreSQL (``lock_timeout``). Turns are taken one at a time, so unbounded, the n-th of
n concurrent commands on one account waited for all the others: behind a lock held in the
database, 5 s each (the 20th answered after 100 s), then ran with its client long gone."""


def _told_later(decision: Decision[Any], at: datetime | None) -> datetime | None:
    """The time the decision's events tell, if later than ``at`` (None: not later)."""
    if at is None:
        return None
    later = None
    for aggregate in decision.changed:
        pending = aggregate._pending_events  # see _with_pending
        # A stream's times never go back, so its last event tells the latest.
        if pending and pending[-1].timestamp > (later or at):
            later = pending[-1].timestamp
    return later


def _with_pending(aggregates: Sequence[Aggregate]) -> list[Aggregate]:
    """The aggregates that have pending events.

    Here, in ``_told_later`` and in the repository's writes the library's attributes are
    read as they are (``_pending_events``, ``_version``, ``_id``), as ``Records`` writes
    them: its properties of the same names cost ~600 instructions a read (callgrind), and
    a spend read them seven times."""
    return [a for a in aggregates if a._pending_events]


def answer_positions() -> RequestScope:
    """Collect the positions of the commands run in this context (and tasks it starts), and
    whether one was replayed: ``with answer_positions() as collected:``. Its reads wait for
    their connections once in all (ledger/store/read_connections.py)."""
    return RequestScope()


def answer_json(answer: Any) -> bytes:
    """``msgspec.json.encode(answer)``: the JSON its claim recorded, when ``answer`` is the one
    a command committed with its claim in this context (``answer_positions()``), rather than
    encoded again (a spend's answer: ~3.5k instructions, callgrind)."""
    collected = get_current_scope()
    recorded = collected.recorded if collected is not None else None
    if recorded is not None and recorded[0] is answer:
        return recorded[1]
    return msgspec.json.encode(answer)


def mark_replayed() -> None:
    """Say the command's answer was the one recorded earlier for the same request (an
    idempotent repeat) rather than decided now, to the caller collecting in
    ``answer_positions()`` (the HTTP edge, the expiry sweep): its ``replayed``."""
    if (collected := get_current_scope()) is not None:
        collected.replayed = True


class Decision(msgspec.Struct, Generic[A], frozen=True):
    """What a handler decided: the answer, the aggregates whose new events to commit, and
    any keys it takes besides its command's claim (one taken already means another command
    got there first: the command is decided again, as on a version conflict).

    A Struct, not a frozen dataclass: made once a command, in a quarter of the time."""

    answer: A
    changed: Sequence[Aggregate] = ()
    keys: Sequence[ClaimRecord] = ()
    answered_as: bytes | None = None
    """The fingerprint the command's claim records, when the answer is another request's
    than the command's (a release of a hold past its expiry records that expiry, as the
    sweeper would: ledger/handlers/holds.py); None: the command's own."""
    not_kept: Sequence[Aggregate] = ()
    """Of ``changed``, those not kept in memory once committed (read from the store when
    next asked for): one whose next command is rare, as a paid Checkout session's, costs
    no copy and check of its state (``Repository.committed``)."""


class Streams:
    """What a handler loads its state through: from memory where it can, or ``fresh``.

    Holds nothing of an attempt but whether it is fresh, so a unit of work makes one of
    each once (a new one every attempt cost about 1 % of a spend's in-process instructions)."""

    def __init__(self, repository: Repository, claims: Claims, *, fresh: bool) -> None:
        self.repository = repository
        self.claims = claims
        self.fresh = fresh

    def get(self, cls: type[G], stream_id: UUID) -> Awaitable[G | None]:
        """The aggregate of ``stream_id`` (None if it has no events yet): awaited as the
        repository's own (a coroutine around it cost every command ~700 instructions)."""
        return self.repository.get(cls, stream_id, fresh=self.fresh)

    def get_many(self, *wanted: tuple[type[Any], UUID]) -> Awaitable[list[Any]]:
        """Several aggregates (each None if it has no events yet), in one round trip:
        awaited as the repository's own, as ``get``."""
        return self.repository.get_many(wanted, fresh=self.fresh)

    async def claim(self, scope: str, key: str) -> StoredAnswer | None:
        """What a claim recorded, if it is made (claims are never undone, so no cache issue)."""
        return await self.claims.find(scope, key)


@dataclass(frozen=True)
class Handler(Generic[C, S, A]):
    """How one command is decided: its lock, its claim, what it loads and the decision."""

    answer: type[A]
    lock: Callable[[C], str]
    load: Callable[[Streams, C], Awaitable[S]]
    decide: Callable[[S, C], Decision[A]]
    claim: Callable[[C], Claim | None] = field(default=lambda _: None)
    replay: Callable[[StoredAnswer, C], A] | None = None
    """The answer for a command whose claim is made already (default: the first answer,
    if the request is the same; else IdempotencyKeyReused)."""


class UnitOfWork:
    """Runs commands: lock, load, decide, commit, retry, replay (see the module)."""

    def __init__(self, repository: Repository, committer: GroupCommitter, claims: Claims) -> None:
        self.repository = repository
        self.committer = committer
        self.claims = claims
        self.locks = KeyedLocks(TURN_WAIT_SECONDS)
        self._streams = {fresh: Streams(repository, claims, fresh=fresh) for fresh in (False, True)}

    async def run(self, handler: Handler[C, Any, A], command: C) -> A:
        """Decide ``command`` once and commit what it decided; see the module."""
        claim = handler.claim(command)
        key = handler.lock(command)
        try:
            async with self.locks.hold(key):
                return await self._decided(handler, command, claim)
        except TurnNotCome as waited:  # only the lock raises it: nothing was tried
            stats.conflicts["gave_up"].inc()
            raise ConcurrencyConflict(f"{key} stayed busy: {waited}") from None
        except ConcurrencyConflict as conflict:
            # Named, for the operator's log line: the store's message names no stream.
            raise ConcurrencyConflict(
                f"{key} stayed contended through {MAX_ATTEMPTS} attempts: {conflict}"
            ) from conflict

    async def _decided(self, handler: Handler[C, Any, A], command: C, claim: Claim | None) -> A:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._attempt(handler, command, claim, fresh=attempt > 1)
            except ConcurrencyConflict:
                if attempt == MAX_ATTEMPTS:
                    stats.conflicts["gave_up"].inc()
                    raise
                stats.conflicts["retried"].inc()
                # Exponential backoff with full jitter spreads out writers that
                # collided so they do not collide again (about 4 s in all).
                await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 10)))  # noqa: S311
            except ClaimTaken:
                assert claim is not None  # only a command with a claim has one taken
                earlier = await self.claims.find(claim.scope, claim.key)
                assert earlier is not None  # claims are committed before they conflict
                await self.note_head()
                return self._replay(handler, claim, earlier, command)
        raise AssertionError("unreachable")

    async def _attempt(
        self, handler: Handler[C, Any, A], command: C, claim: Claim | None, *, fresh: bool
    ) -> A:
        try:
            decision = self._decide(handler, await self._load(handler, command, fresh), command)
            for _ in range(MAX_REDECISIONS):
                if (later := _told_later(decision, getattr(command, "at", None))) is None:
                    break
                # A stream it changes told a later time than the command's (the command
                # waited for its turn, or another's commit made it decide again): the
                # stream's times never go back (``Records``), so it is decided again at
                # that time, which all its events then tell and its judgements (expiries,
                # the period) are made at.
                command = msgspec.structs.replace(command, at=later)  # type: ignore[type-var]
                decision = self._decide(handler, await self._load(handler, command, fresh), command)
            else:
                # Other processes kept recording later events: decided afresh, after a pause.
                if _told_later(decision, getattr(command, "at", None)) is not None:
                    raise ConcurrencyConflict("its streams kept telling later times")
        except DomainError:
            if (replayed := await self._replayed(handler, claim, command)) is not None:
                return replayed
            if fresh:
                raise
            # A refusal is never trusted to the cache. The claim is looked up again after
            # the fresh load: an earlier attempt of this command (its answer lost) may have
            # committed in between, and its events, now loaded, refuse the command its own
            # claim answers.
            return await self._attempt(handler, command, claim, fresh=True)
        changed = _with_pending(decision.changed)
        if not fresh and not changed and (claim is None or decision.changed):
            # Nor is "nothing to do" (a plan or a period already set): writing no event, it
            # would meet no version check, so it is decided again on fresh state. So is a
            # keyed one that left the state it judged unchanged: its claim alone meets no
            # version check either, and would keep a stale answer for good. (One that judged
            # no state, a Stripe event for nothing the ledger knows, is answered as it is.)
            return await self._attempt(handler, command, claim, fresh=True)
        await self._commit(decision, changed, claim)
        return decision.answer

    @staticmethod
    def _decide(handler: Handler[C, S, A], state: S, command: C) -> Decision[A]:
        at = set_command_time(getattr(command, "at", None))
        try:
            return handler.decide(state, command)
        finally:
            reset_command_time(at)

    async def _replayed(
        self, handler: Handler[C, Any, A], claim: Claim | None, command: C
    ) -> A | None:
        """The first answer of a command whose claim is made already; None if it is not."""
        if claim is None:
            return None
        earlier = await self.claims.find(claim.scope, claim.key)
        if earlier is None:
            return None
        await self.note_head()
        return self._replay(handler, claim, earlier, command)

    def _load(self, handler: Handler[C, S, A], command: C, fresh: bool) -> Awaitable[S]:
        return handler.load(self._streams[fresh], command)  # awaited as the handler's own

    async def _commit(
        self, decision: Decision[Any], changed: list[Aggregate], claim: Claim | None
    ) -> None:
        """Commit the decision's ``changed`` aggregates (those with pending events) and claims."""
        if not changed and claim is None:
            await self.note_head()
            return
        claims: list[ClaimRecord] = []
        recorded: bytes | None = None
        if claim is not None:
            if decision.answered_as is not None:
                claim = msgspec.structs.replace(claim, fingerprint=decision.answered_as)
            recorded = msgspec.json.encode(decision.answer)
            claims.append(ClaimRecord(claim, recorded))
        writes = self.repository.writes(changed, [*claims, *decision.keys])
        try:
            positions = await self.committer.commit(writes)
        except ConcurrencyConflict:
            raise  # the cached copies are as they were before this decision: still true
        except ClaimTaken:
            self.repository.forget(changed)
            if decision.keys and not await self._claim_made(claim):
                raise ConcurrencyConflict("another command took a key this one takes") from None
            raise
        except BaseException:
            self.repository.forget(changed)
            raise
        self.repository.committed(changed, writes, decision.not_kept)
        collected = get_current_scope()
        if collected is not None and recorded is not None:
            collected.recorded = (decision.answer, recorded)
        if positions and collected is not None:
            collected.note(max(positions))
        elif not positions:
            await self.note_head()

    async def _claim_made(self, claim: Claim | None) -> bool:
        return claim is not None and await self.claims.find(claim.scope, claim.key) is not None

    async def note_head(self) -> None:
        """An answer that wrote nothing stands at the store's head (one query, if collected)."""
        if (collected := get_current_scope()) is not None:
            collected.note(await self.repository.store.head_position())

    @staticmethod
    def _replay(handler: Handler[C, Any, A], claim: Claim, earlier: StoredAnswer, command: C) -> A:
        if handler.replay is not None:
            answer = handler.replay(earlier, command)
        else:
            answer = replay(earlier, claim.fingerprint, handler.answer)
        if earlier.request_hash == claim.fingerprint:
            # A replay is the answer recorded for this same request. A handler may answer
            # another with it (a release of a hold whose expiry was recorded gets that
            # expiry): that request was never answered before, so it is not one.
            mark_replayed()
        return answer

"""Aggregates in and out of the event store: loading (with a cache) and encoding their writes."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from types import MappingProxyType, UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import StoredEvent

from ledger.store import stats
from ledger.store.commit import ClaimRecord, Writes
from ledger.store.event_store import EventStore, RecordedEvent
from ledger.store.mapper import MsgspecMapper

A = TypeVar("A", bound=Aggregate)

SNAPSHOT_EVERY = 100
"""Events between snapshots: loading replays at most this many after the newest one."""
CACHE_SIZE = 50_000
"""Aggregates kept in memory, least recently used dropped first."""

_NOT_IN_MEMORY: Any = object()
"""``get_many``'s place of a stream it reads from the store."""

_IMMUTABLE = (int, str, bool, float, bytes, type(None), UUID, dt.datetime, tuple, frozenset)
_EXACTLY_IMMUTABLE: frozenset[type] = frozenset(_IMMUTABLE)
"""The same, for the usual case (an exact type) without isinstance's walk of the MRO."""


class UnreadableStream(Exception):
    """A stream with a stored event (or snapshot) that does not decode or apply: nothing can
    be decided on it, or read from it, until an operator repairs it (``ledger audit verify``
    names every such row). Its message is one line naming the row."""

    def __init__(self, recorded: RecordedEvent, error: Exception, *, snapshot: bool) -> None:
        self.stream_id = recorded.originator_id
        reason = " ".join(str(error).split()) or "no detail"
        row = (
            f"its snapshot at version {recorded.originator_version}"
            if snapshot
            else f"its event at position {recorded.notification_id} "
            f"({recorded.topic.rpartition(':')[2]}, version {recorded.originator_version})"
        )
        super().__init__(
            f"stream {recorded.originator_id} cannot be loaded: {row} cannot be read: "
            f"{type(error).__name__}: {reason}"
        )


class MutableState(TypeError):
    """An aggregate holds a value that a decision could change in place (see ``copy_of``)."""


class Repository:
    """Aggregates as their events leave them, from memory when it can.

    Keeps recently used aggregates as they were after their last committed
    write. That is safe across processes because every append names the
    version it expects: an aggregate another process changed meanwhile makes
    the append conflict, and the command is decided again on a fresh load, which
    reads the events the cached copy has not seen. Decisions are made on copies (``copy_of``),
    so a refused or failed decision never touches what is cached.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.store = store
        self.mapper = MsgspecMapper()
        self.cache_size = cache_size
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        """By the stream id's number (``UUID.int``): a UUID's hash is a Python method (~900
        instructions), and a command looked its stream up five times."""

    def reading_from(self, store: EventStore) -> Repository:
        """This repository's aggregates, with what is not in memory read through ``store``
        (the reads' connections): the same memory, what either reads kept for both."""
        reads = Repository(store, cache_size=self.cache_size)
        reads.mapper = self.mapper
        reads._cache = self._cache
        return reads

    async def get(
        self,
        cls: type[A],
        aggregate_id: UUID,
        *,
        as_of: dt.datetime | None = None,
        fresh: bool = False,
    ) -> A | None:
        """The aggregate as its events leave it (up to ``as_of``), or None if none yet.

        Comes from memory when it can (not for ``as_of``); ``fresh`` reads every event
        the cached copy has not seen from the store (after a conflict, usually the one
        other writer's); without a cached copy it starts from the newest snapshot that
        fits and replays the events after it. The caller gets its own copy to decide on.
        """
        if as_of is None and (cached := self._cache.get(key := aggregate_id.int)):
            self._cache.move_to_end(key)
            if not fresh:
                return _checked(cls, _thawed(*cached), aggregate_id)
            return _checked(cls, await self._caught_up(*cached), aggregate_id)
        snapshot, events = await self.store.load_from_snapshot(aggregate_id, recorded_until=as_of)
        aggregate = self.replay(snapshot, events)
        if aggregate is not None and as_of is None:
            # Its attributes in a compact dict of its own, as a thawed copy has them: the
            # command decided on it leaves the cache a compact state too (``_frozen``).
            aggregate.__dict__ = dict(aggregate.__dict__.items())
            self._remember(aggregate)
        return _checked(cls, aggregate, aggregate_id)

    async def get_many(
        self, wanted: Sequence[tuple[type[Any], UUID]], *, fresh: bool = False
    ) -> list[Any]:
        """``get`` of several aggregates, those not in memory read in one round trip.

        Unlike ``get``, it keeps none of what it reads in memory: its one caller, a Stripe
        event's load (ledger/handlers/payments.py), changes what it reads nearly always,
        and ``committed`` keeps that at its new version (but a session it settled);
        keeping it at its read version too cost a paid delivery one ``_frozen`` more (a
        Checkout session's: 17k instructions, callgrind). A stream it changed nothing of is
        read again next time."""
        # By position, not in dicts by stream id: a UUID's hash is a Python method (~900
        # instructions), and a paid delivery's load hashed its two streams' ids six times.
        found: list[Any] = []
        missing: list[UUID] = []
        for cls, aggregate_id in wanted:
            if not fresh and (cached := self._cache.get(key := aggregate_id.int)):
                self._cache.move_to_end(key)
                found.append(_checked(cls, _thawed(*cached), aggregate_id))
            else:
                found.append(_NOT_IN_MEMORY)
                missing.append(aggregate_id)
        if not missing:
            return found
        loaded = iter(await self.store.load_many_from_snapshots(missing))
        for at, (cls, aggregate_id) in enumerate(wanted):
            if found[at] is _NOT_IN_MEMORY:
                stream = next(loaded)
                aggregate = self.replay(*stream) if stream is not None else None
                found[at] = _checked(cls, aggregate, aggregate_id)
        return found

    async def _caught_up(self, cls: type, state: dict[str, Any], dicts: tuple[str, ...]) -> Any:
        """A cached aggregate brought up to the store's newest version: the cache holds
        an aggregate exactly as its events up to its version leave it, so applying the
        later ones gives what a load from the snapshot would, for one short read."""
        aggregate = _thawed(cls, state, dicts)
        later = await self.store.load(aggregate.id, after_version=aggregate.version)
        if later:
            aggregate = self.replay(None, later, aggregate)
            self._remember(aggregate)
        return aggregate

    def replay(
        self, snapshot: RecordedEvent | None, events: Iterable[RecordedEvent], aggregate: Any = None
    ) -> Any:
        """An aggregate from its newest snapshot (if any) and the events after it, or
        ``aggregate`` with ``events`` applied."""
        recorded = snapshot
        try:
            if snapshot is not None:
                aggregate = self.mapper.to_domain_event(snapshot).mutate(None)
            for recorded in events:
                aggregate = self.mapper.to_domain_event(recorded).mutate(aggregate)
        except Exception as error:  # a row changed by hand may not even name a type
            if recorded is None:
                raise
            raise UnreadableStream(recorded, error, snapshot=recorded is snapshot) from error
        return aggregate

    def holds(self, aggregate_id: UUID) -> bool:
        """Whether the aggregate is in memory (as its last write here, or a load, left it)."""
        return aggregate_id.int in self._cache

    async def exists(self, aggregate_id: UUID) -> bool:
        """Whether the aggregate has been created."""
        return aggregate_id.int in self._cache or await self.store.exists(aggregate_id)

    def writes(self, aggregates: Sequence[Aggregate], claims: Sequence[ClaimRecord]) -> Writes:
        """The aggregates' pending events (and any snapshots due), ready to commit."""
        # One loop, not a comprehension for each (each its own frame): ~2k instructions.
        events: list[StoredEvent] = []
        snapshots: list[StoredEvent] = []
        for aggregate in aggregates:
            if _snapshot_due(aggregate):  # before its events are collected
                snapshots.append(self._snapshot(aggregate))
            # The library's collect_events() without its loop of pop(0)s (~1.9k instructions
            # an aggregate, callgrind): the same list, emptied once encoded.
            pending = aggregate._pending_events
            events.extend(map(self.mapper.to_stored_event, pending))
            pending.clear()
        return Writes(events=events, claims=claims, snapshots=snapshots)

    def committed(
        self,
        aggregates: Sequence[Aggregate],
        writes: Writes,
        not_kept: Sequence[Aggregate] = (),
    ) -> None:
        """Remember what was committed, but ``not_kept``: forgotten, with any older copy of it
        in memory, so that the next load reads the store."""
        for event in writes.events:
            stats.count_appended(event.topic)
        for aggregate in aggregates:
            # A loop, not ``any()`` over a generator (a frame each): by identity, as an
            # aggregate's ``==`` compares states.
            for other in not_kept:
                if aggregate is other:
                    break
            else:
                self._remember(aggregate)
        if not_kept:
            self.forget(not_kept)

    def forget(self, aggregates: Iterable[Aggregate]) -> None:
        """Drop aggregates from memory (a write that failed, or ``committed``'s ``not_kept``):
        the next load reads the store."""
        for aggregate in aggregates:
            self._cache.pop(aggregate._id.int, None)  # not its property: see _remember

    def _snapshot(self, aggregate: Aggregate) -> Any:
        # Taken after the pending events were applied, i.e. at the new version.
        return self.mapper.to_stored_event(snapshot_of(aggregate))

    def _remember(self, aggregate: Aggregate) -> None:
        if self.cache_size <= 0:
            return
        key = aggregate._id.int  # not its properties: see ledger.unit_of_work._with_pending
        # Taken out and put back last: one lookup fewer than moving it to the end.
        known = self._cache.pop(key, None)
        if known is None:
            # New to the cache: its state made compact (see ``_frozen``); then it stays so.
            self._cache[key] = (type(aggregate), *_frozen(aggregate, anew=True))
        elif known[1]["_version"] <= aggregate._version:
            self._cache[key] = (type(aggregate), *_frozen(aggregate, dicts=known[2]))
        else:  # a newer version is known (a fresh load here since): kept
            self._cache[key] = known
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def snapshot_of(aggregate: Aggregate) -> Snapshot:
    """The aggregate's snapshot: its state but what its class names ``DERIVED_STATE``
    (made again on load from what the snapshot keeps, by its ``restore_state``)."""
    snapshot: Snapshot = Snapshot.take(aggregate)
    for name in getattr(type(aggregate), "DERIVED_STATE", ()):
        del snapshot.state[name]
    return snapshot


def copy_of(aggregate: Any) -> Any:
    """A copy to decide on that shares nothing a decision could change.

    Aggregates keep immutable values, or dicts of them that their events replace
    rather than change (see ledger/domain/account.py). Copying each dict makes
    even an in-place change of one harmless; any other mutable value is refused
    (MutableState), so the rule is checked, not remembered.
    """
    return _thawed(type(aggregate), *_frozen(aggregate))


_Cached = tuple[type, dict[str, Any], tuple[str, ...]]
"""What the cache keeps of an aggregate: its class, its state (``_frozen``) and which of
the state's values are dicts (``_thawed`` copies them)."""


def _frozen(
    aggregate: Any, *, anew: bool = False, dicts: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The aggregate's state as the cache keeps it, checked once, when it is remembered,
    and the names of its dicts.

    A dict of its own (``dict()``, not ``copy()``): an aggregate made by its class (opened,
    replayed) keeps its attributes in a key-sharing dict, which ``copy()`` keeps sharing,
    and an instance given such a dict as its ``__dict__`` has none of its attribute reads
    and writes sped up by the interpreter (~270 instructions more each, some 40 a spend).
    Its pending events stay a key with an empty value: a key taken out leaves a hole, and
    the ``copy()`` of each ``_thawed`` is then no longer a plain copy of the table.

    ``anew`` (an aggregate the cache does not hold yet, or a load's: ``get``): built key by
    key, so that its table is as small as its keys allow. CPython's ``dict()`` copies such a
    table whole, and ``_thawed``'s ``copy()`` keeps it so; any other (a key-sharing dict,
    one ``dict()`` made, a snapshot's with a hole) it fills key by key into a larger one (a
    CreditAccount's 21 keys into 64 slots), and so again at every write after: a spend's
    ``_frozen`` 25.3k -> 19.6k instructions (callgrind), 441.0-442.0k -> 435.8k a spend.

    ``dicts``: the names of the dicts its cached state had, for ``_dicts_copied``."""
    state = dict(aggregate.__dict__.items() if anew else aggregate.__dict__)
    state["_pending_events"] = ()
    if dicts is not None and _dicts_copied(type(aggregate), state, dicts):
        return state, dicts
    return state, _checked_each(type(aggregate), state)


def _dicts_copied(cls: type, state: dict[str, Any], dicts: tuple[str, ...]) -> bool:
    """Check ``state`` and copy its dicts, when they are the ones named (as a state's
    usually are from one write to the next); False, ``state`` as it was, when they are not
    or a value's type is not known immutable yet (``_checked_each``).

    The named dicts set aside, the other values' types are looked up in one ``issuperset``
    (a loop in C, not a test a value in the interpreter); ``dict`` is not in the set, so a
    dict not named fails it. A CreditAccount's ``_frozen`` 19.9k -> 15.2k instructions
    (callgrind, two empty dicts: an empty one is not looked into)."""
    held: list[tuple[str, dict[str, Any]]] = []
    for name in dicts:
        value = state.get(name)
        if type(value) is not dict:
            state.update(held)  # those set aside so far
            return False
        held.append((name, value))
        state[name] = None  # set aside, the same key: the table stays as compact
    if not _SEEN_IMMUTABLE.issuperset(map(type, state.values())):
        state.update(held)
        return False
    for name, value in held:
        if not value:
            state[name] = {}
            continue
        if not _SEEN_IMMUTABLE.issuperset(map(type, value.values())):
            for item in value.values():
                _check_immutable(cls, name, item)
        state[name] = dict(value)
    return True


def _checked_each(cls: type, state: dict[str, Any]) -> tuple[str, ...]:
    """Check each of ``state``'s values and copy its dicts (in place): their names."""
    dicts = []
    seen = _SEEN_IMMUTABLE  # a local: read once, not once a value
    for name, value in state.items():
        if type(value) in seen:  # the usual value: one test (a dict is never seen)
            continue
        if type(value) is dict:
            if not seen.issuperset(map(type, value.values())):
                for item in value.values():
                    _check_immutable(cls, name, item)
            state[name] = dict(value)
            dicts.append(name)
        else:
            _check_immutable(cls, name, value)
    return tuple(dicts)


def _thawed(cls: type, state: dict[str, Any], dicts: tuple[str, ...]) -> Any:
    """A new aggregate from a cached state: its own dicts, an empty pending list.

    Its ``__dict__`` is a copy of the state, given whole: filling the new object's own
    (``update``) cost twice as much, and looking at every value for the dicts as much again.
    The state is a dict of its own (``_frozen``), so the copy is too: one attributes are
    read from at the interpreter's quick paths.
    """
    copy: Any = object.__new__(cls)
    fields = state.copy()
    for name in dicts:
        fields[name] = dict(state[name])
    fields["_pending_events"] = []
    copy.__dict__ = fields
    return copy


_SEEN_IMMUTABLE: set[type] = set(_EXACTLY_IMMUTABLE)
"""Types found immutable (the exact ones to start with): the check of a value is then one
set lookup."""


def _check_immutable(cls: type, name: str, value: object) -> None:
    kind = type(value)
    if kind in _EXACTLY_IMMUTABLE or kind in _SEEN_IMMUTABLE:
        return
    if isinstance(value, _IMMUTABLE) or (
        isinstance(value, msgspec.Struct) and _immutable_declared(kind)
    ):
        _SEEN_IMMUTABLE.add(kind)
        return
    raise MutableState(f"{cls.__name__}.{name} holds a {kind.__name__}, which can change")


def _immutable_declared(annotation: Any) -> bool:
    """Whether a value of this type cannot change in place, as its type declares it: a
    frozen struct is only if its fields are too (frozen, a dict field can change all the
    same). Like the check of values, it looks at types, not at what a tuple holds."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return True
    if origin is not None:
        return _immutable_declared(origin) and all(
            _immutable_declared(arg) for arg in args if arg is not Ellipsis
        )
    if annotation is None or annotation in _EXACTLY_IMMUTABLE:
        return True
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return bool(annotation.__struct_config__.frozen) and all(
            _immutable_declared(field.type) for field in msgspec.structs.fields(annotation)
        )
    return annotation in (Union, UnionType, MappingProxyType) or (
        isinstance(annotation, type) and issubclass(annotation, _IMMUTABLE)
    )


def _checked(cls: type[A], aggregate: Any, aggregate_id: UUID) -> A | None:
    if aggregate is not None and not isinstance(aggregate, cls):
        raise TypeError(f"stream {aggregate_id} holds a {type(aggregate).__name__}")
    return aggregate  # type: ignore[no-any-return]


def _snapshot_due(aggregate: Aggregate) -> bool:
    """Whether this write carries the aggregate past a multiple of SNAPSHOT_EVERY."""
    pending = len(aggregate._pending_events)  # not its properties: see _remember
    version = aggregate._version
    return pending > 0 and (version - pending) // SNAPSHOT_EVERY < version // SNAPSHOT_EVERY

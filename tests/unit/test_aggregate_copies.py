"""``copy_of`` (ledger/store/repository.py): a copy that shares no dict, of an aggregate
whose values cannot change in place; any other value is refused."""

from __future__ import annotations

import asyncio
import dis
import sys
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ledger.domain.account import CreditAccount
from ledger.store.repository import MutableState, Repository, _thawed, copy_of


class Frozen(msgspec.Struct, frozen=True):
    amount: int


class Thawed(msgspec.Struct):
    amount: int


class FrozenHoldingADict(msgspec.Struct, frozen=True):
    """Frozen: no field can be set, but its dict can change in place all the same."""

    per_grant: dict[str, int]


class FrozenHoldingThawed(msgspec.Struct, frozen=True):
    inner: tuple[Thawed | None, ...]


def account() -> CreditAccount:
    opened = CreditAccount.open("acct_copies", 100, "2026-12")
    opened.collect_events()
    return opened


def test_the_copy_has_the_same_state_and_dicts_of_its_own() -> None:
    original = account()
    original.__dict__["extra"] = {"a": Frozen(1), "b": (1, 2), "c": None}

    copy = copy_of(original)

    assert copy is not original
    assert {k: v for k, v in copy.__dict__.items() if k != "_pending_events"} == {
        k: v for k, v in original.__dict__.items() if k != "_pending_events"
    }
    for name, value in original.__dict__.items():
        if type(value) is dict:
            assert copy.__dict__[name] is not value
    assert copy.pending_events == []


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ({"x": [1]}, "list"),
        ({"x": Frozen(1), "y": {"nested": 1}}, "dict"),
        ({"x": Thawed(1)}, "Thawed"),
        (Thawed(1), "Thawed"),
        (FrozenHoldingADict({"g": 1}), "FrozenHoldingADict"),
        ({"x": FrozenHoldingADict({"g": 1})}, "FrozenHoldingADict"),
        (FrozenHoldingThawed(()), "FrozenHoldingThawed"),
        (bytearray(b"x"), "bytearray"),
    ],
)
def test_a_value_that_could_change_in_place_is_refused(value: object, kind: str) -> None:
    original = account()
    original.__dict__["extra"] = value

    with pytest.raises(MutableState, match=f"CreditAccount.extra holds a {kind}, which can change"):
        copy_of(original)


def test_what_open_holds_reserve_of_each_grant_cannot_change_in_place() -> None:
    """``held_totals`` is shared by the cached account and every copy decided on: a change
    in place of what it keeps per grant would change the cached account's too."""
    original = account()
    at = datetime(2026, 12, 1, tzinfo=UTC)
    original.grant("g1", 50, priority=0, expires_at=None, reason="", at=at)
    original.place_hold("h1", 150, "job", at + timedelta(hours=1), at)
    copy = copy_of(original)

    with pytest.raises(TypeError):
        copy.held_totals.of_grants["g1"] = 0  # type: ignore[index]
    assert original.free_of_grant("g1") == 0


@pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11),
    reason="names CPython 3.11's specialized instructions",
)
def test_a_copy_is_read_at_the_interpreters_quick_path() -> None:
    """An aggregate its class made keeps its attributes in a key-sharing dict; a copy given
    such a dict as its ``__dict__`` is read (and written) on CPython's slow path only, every
    attribute of every decision. A copy's own dict is read on the specialized one."""
    copy = copy_of(copy_of(account()))

    def read(aggregate: CreditAccount) -> int:
        return aggregate.allowance_remaining

    for _ in range(64):  # past the interpreter's warm-up before it specializes
        read(copy)
    opnames = {i.opname for i in dis.get_instructions(read, adaptive=True)}  # type: ignore[call-arg]
    assert "LOAD_ATTR_WITH_HINT" in opnames, opnames


def test_the_cache_keeps_the_newest_version_and_forgets_the_longest_unused() -> None:
    repository = Repository(None, cache_size=2)  # type: ignore[arg-type]  # no store read
    older, other, third = (CreditAccount.open(f"acct_lru_{n}", 100, "2026-12") for n in range(3))
    newer = copy_of(older)
    newer.spend(1, "")
    repository._remember(newer)
    repository._remember(other)
    repository._remember(older)  # an older version: the newer one is kept, now used last

    assert repository._cache[older.id.int][1]["_version"] == newer.version
    repository._remember(third)
    assert [repository.holds(a.id) for a in (older, other, third)] == [True, False, True]


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's dict tables")
def test_the_cache_keeps_a_state_as_compact_as_its_keys_allow_through_its_spends() -> None:
    """``dict()`` copies a compact table whole; one made from a key-sharing dict (an
    aggregate its class made) it sizes for many more keys, and fills key by key again at
    every later write (ledger/store/repository.py ``_frozen``)."""
    repository = Repository(None)  # type: ignore[arg-type]  # no store read
    opened = account()
    repository._remember(opened)
    _spend_thrice_from_the_cache(repository, opened)


def _spend_thrice_from_the_cache(repository: Repository, opened: CreditAccount) -> None:
    for _ in range(3):
        state = repository._cache[opened.id.int][1]
        assert sys.getsizeof(state) == sys.getsizeof(dict(state.items()))
        spent = _thawed(*repository._cache[opened.id.int])  # as a load from the cache
        spent.spend(1, "")
        repository._remember(spent)


def test_a_decided_copy_is_kept_as_it_was_committed_whatever_is_done_to_it_after() -> None:
    """The state kept of a copy that was decided on and committed (frozen the quick way, its
    table cloned) shares no dict with the copy: changing the copy afterwards, in place or
    not, reaches no later copy."""
    repository = Repository(None)  # type: ignore[arg-type]  # no store read
    at = datetime(2026, 12, 1, tzinfo=UTC)
    opened = account()
    opened.grant("g1", 50, priority=0, expires_at=None, reason="", at=at)
    opened.collect_events()
    repository._remember(opened)
    decided = copy_of(opened)
    decided.place_hold("h1", 20, "job", at + timedelta(hours=1), at)
    decided.collect_events()
    repository._remember(decided)
    kept = {k: v for k, v in copy_of(decided).__dict__.items() if k != "_pending_events"}

    decided.holds["h2"] = decided.holds["h1"]
    decided.grants.clear()
    decided.allowance_remaining = -1
    later = asyncio.run(repository.get(CreditAccount, opened.id))  # from memory

    assert later is not None
    assert {k: v for k, v in later.__dict__.items() if k != "_pending_events"} == kept
    assert set(later.holds) == {"h1"}
    assert set(later.grants) == {"g1"}
    assert later.allowance_remaining == kept["allowance_remaining"] != -1


@pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11),
    reason="names CPython 3.11's specialized instructions",
)
def test_a_copy_of_a_decided_copy_is_read_at_the_interpreters_quick_path() -> None:
    """Frozen the quick way (its table cloned), a decided copy's state still gives copies
    whose attributes are read on the specialized path, decision after decision."""
    copy = copy_of(account())
    for _ in range(3):
        copy.purchase("cs_1", 10)
        copy.collect_events()
        copy = copy_of(copy)

    def read(aggregate: CreditAccount) -> int:
        return aggregate.allowance_remaining

    for _ in range(64):  # past the interpreter's warm-up before it specializes
        read(copy)
    opnames = {i.opname for i in dis.get_instructions(read, adaptive=True)}  # type: ignore[call-arg]
    assert "LOAD_ATTR_WITH_HINT" in opnames, opnames


def _remembered_then_decided(repository: Repository) -> CreditAccount:
    """An account in memory, and a copy of it a decision changed (its dicts those cached)."""
    opened = account()
    repository._remember(opened)
    decided = copy_of(opened)
    decided.purchase("cs_1", 10)
    decided.collect_events()
    return decided


@pytest.mark.parametrize(
    ("value", "kind"),
    [([1], "list"), ({"x": [1]}, "list"), (Thawed(1), "Thawed"), (bytearray(b"x"), "bytearray")],
)
def test_a_decided_copy_holding_a_value_that_could_change_is_refused_by_the_cache(
    value: object, kind: str
) -> None:
    """A state whose dicts are those its last write had is checked in one look at its
    values' types (``_dicts_copied``): a value of any other type is still refused, in an
    attribute of its own, in place of a dict or in one."""
    for name in ("extra", "holds", "allowance_remaining"):
        repository = Repository(None)  # type: ignore[arg-type]  # no store read
        decided = _remembered_then_decided(repository)
        decided.__dict__[name] = value

        with pytest.raises(MutableState, match=f"holds a {kind}, which can change"):
            repository._remember(decided)


def test_a_decided_copy_with_a_dict_the_cached_state_had_not_keeps_a_copy_of_it() -> None:
    """A dict not named by the cached state (a new attribute, or a value that was not a dict)
    is found and copied all the same: changing the decided copy's reaches no later copy."""
    for name in ("extra", "low_balance_threshold"):
        repository = Repository(None)  # type: ignore[arg-type]  # no store read
        decided = _remembered_then_decided(repository)
        decided.__dict__[name] = {"a": Frozen(1)}
        repository._remember(decided)

        decided.__dict__[name]["b"] = Frozen(2)
        later = asyncio.run(repository.get(CreditAccount, decided.id))  # from memory

        assert later is not None
        assert later.__dict__[name] == {"a": Frozen(1)}
        assert name in repository._cache[decided.id.int][2]


def test_a_decided_copy_whose_dict_became_another_value_is_kept_as_it_is() -> None:
    """A named dict no longer a dict: the state is checked value by value, and its dicts
    are named again (the next copy copies only those)."""
    repository = Repository(None)  # type: ignore[arg-type]  # no store read
    decided = _remembered_then_decided(repository)
    decided.__dict__["holds"] = (1, 2)
    repository._remember(decided)

    _, state, dicts = repository._cache[decided.id.int]
    assert state["holds"] == (1, 2)
    assert dicts == ("grants",)
    assert state["grants"] == {}
    assert state["grants"] is not decided.grants

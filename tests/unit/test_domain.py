"""The pure domain: aggregates, ids and the mapper's round trip, no I/O."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent

from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.errors import InvalidAccountId, InvalidAmount
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.store.mapper import MsgspecMapper, _dict_setter, event_type_name


def test_an_opened_account_has_its_whole_allowance_and_no_topups() -> None:
    account = CreditAccount.open("acct_1", 5000, "2026-11")

    assert account.allowance_remaining == 5000
    assert account.topup_balance == 0
    assert account.balance == 5000
    assert account.id == account_stream_id("acct_1")


def test_account_ids_are_deterministic_and_distinct_from_checkout_ids() -> None:
    assert account_stream_id("acct_1") == account_stream_id("acct_1")
    assert account_stream_id("acct_1") != account_stream_id("acct_2")
    assert account_stream_id("x") != checkout_stream_id("x")


@pytest.mark.parametrize("account_id", ["", "has space", "a/b", "é", "x" * 101, "_leading"])
def test_awkward_account_ids_are_refused(account_id: str) -> None:
    with pytest.raises(InvalidAccountId):
        CreditAccount.open(account_id, 1, "2026-11")


def test_a_negative_allowance_is_refused() -> None:
    with pytest.raises(InvalidAmount):
        CreditAccount.open("acct_1", -1, "2026-11")


def _round_trip(aggregate: Aggregate) -> Any:
    mapper = MsgspecMapper()
    stored = [mapper.to_stored_event(e) for e in aggregate.collect_events()]
    rebuilt: Any = None
    for item in stored:
        rebuilt = mapper.to_domain_event(item).mutate(rebuilt)
    return stored, rebuilt


def test_events_round_trip_through_the_msgspec_mapper() -> None:
    session = CheckoutSession.request(
        session_id="cs_test_1",
        account_id="acct_1",
        credits=1000,
        amount=1000,
        currency="usd",
        checkout_url="https://checkout.example/cs_test_1",
        expires_at=1_800_000_000,
    )

    stored, rebuilt = _round_trip(session)

    assert event_type_name(stored[0].topic) == "CheckoutRequested"
    assert b'"credits":1000' in stored[0].state  # readable JSON for auditors
    assert rebuilt.id == session.id
    assert rebuilt.version == 1
    assert rebuilt.credits == 1000
    assert isinstance(rebuilt.credits, int)
    assert rebuilt.status == "pending"


def test_a_stored_event_is_the_librarys_as_its_init_makes_it() -> None:
    """The mapper makes the library's ``StoredEvent`` without its ``__init__``: the same
    fields in the same order, equal, hashed alike and as frozen."""
    account = CreditAccount.open("acct_stored", 100, "2026-11")
    account.spend(3, "job")

    for recorded in account.collect_events():
        stored = MsgspecMapper().to_stored_event(recorded)
        made = StoredEvent(
            originator_id=recorded.originator_id,
            originator_version=recorded.originator_version,
            topic=stored.topic,
            state=stored.state,
        )
        assert type(stored) is StoredEvent
        assert list(vars(stored).items()) == list(vars(made).items())
        assert stored == made
        assert hash(stored) == hash(made)
        with pytest.raises(dataclasses.FrozenInstanceError):
            stored.topic = "changed"  # type: ignore[misc]


def test_a_decoded_event_is_given_its_fields_as_its_own_dict_and_stays_frozen() -> None:
    """The fast decoder hands its decoded dict to the event through the ``__dict__``
    descriptor the event's class inherits (``_dict_setter``), past the frozen dataclass's
    ``__setattr__``: the event then is the one recorded, field for field."""
    account = CreditAccount.open("acct_dict", 100, "2026-11")
    account.spend(3, "job")
    mapper = MsgspecMapper()
    for recorded in account.collect_events():
        kind = type(recorded)
        values = dict(vars(recorded))
        made = object.__new__(kind)
        _dict_setter(kind)(made, values)
        assert vars(made) is values
        assert made == recorded
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.originator_version = 7  # type: ignore[misc]
        decoded = mapper.to_domain_event(mapper.to_stored_event(recorded))
        assert type(decoded) is kind
        assert vars(decoded) == vars(recorded)


class Thing(Aggregate):
    """A test aggregate whose event gained a field in version 2."""

    class Named(Aggregate.Created):
        class_version = 2
        name: str
        colour: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["colour"] = "unknown"

    @event(Named)
    def __init__(self, name: str, colour: str) -> None:
        self.name = name
        self.colour = colour


def test_an_old_event_shape_is_upcast_on_load() -> None:
    mapper = MsgspecMapper()
    current = mapper.to_stored_event(Thing(name="n", colour="red").collect_events()[0])
    assert b'"class_version":2' in current.state
    version_one = type(current)(
        originator_id=uuid.uuid4(),
        originator_version=1,
        topic=current.topic,
        state=current.state.replace(b',"class_version":2', b"").replace(b',"colour":"red"', b""),
    )
    assert b"colour" not in version_one.state

    thing = mapper.to_domain_event(version_one).mutate(None)

    assert thing.colour == "unknown"
    assert thing.name == "n"


def test_fields_left_out_of_a_stored_event_load_as_their_defaults() -> None:
    """Events stored before a field with a default existed load with that default: spends
    from before grants take from none (each its own dict), resets from before holds
    carried nothing. Every other field comes back as it was."""
    account = CreditAccount.open("acct_1", 1000, "2026-11")
    account.spend(10, "work")
    account.spend(20, "work")
    account.reset_month("2026-12")
    mapper = MsgspecMapper()
    events = account.collect_events()
    older = [
        StoredEvent(
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=stored.state.replace(b',"from_grants":{}', b"")
            .replace(b',"held_allowance_carried":0', b"")
            .replace(b',"debt_repaid":0', b""),
        )
        for stored in map(mapper.to_stored_event, events)
    ]
    assert b"from_grants" not in older[1].state
    assert b"debt_repaid" not in older[3].state

    loaded = [mapper.to_domain_event(stored) for stored in older]

    assert loaded == events
    assert loaded[1].from_grants == {}
    assert loaded[1].from_grants is not loaded[2].from_grants
    assert (loaded[3].held_allowance_carried, loaded[3].debt_repaid) == (0, 0)


def test_a_version_one_checkout_requested_loads_as_not_recovered() -> None:
    """CheckoutRequested gained ``recovered`` in version 2; stored version 1 events lack it."""
    session_id = "cs_test_from_the_first_release"
    version_one = StoredEvent(
        originator_id=checkout_stream_id(session_id),
        originator_version=1,
        topic="ledger.domain.checkout:CheckoutSession.CheckoutRequested",
        state=(
            b'{"timestamp":"2026-11-25T16:00:00Z",'
            b'"originator_topic":"ledger.domain.checkout:CheckoutSession",'
            b'"session_id":"cs_test_from_the_first_release","account_id":"acct_1",'
            b'"credits":1000,"amount":1000,"currency":"usd",'
            b'"checkout_url":"https://checkout.example/x","expires_at":1800000000}'
        ),
    )

    session = MsgspecMapper().to_domain_event(version_one).mutate(None)

    assert session.recovered is False
    assert session.credits == 1000
    assert session.status == "pending"

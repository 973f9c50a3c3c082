"""The audit's replay applies an event by the domain method its aggregate's ``evolve`` would
call, and only while that ``evolve`` is its registry's own (``audit.appliers.applier_of``)."""

import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.utils import get_topic

from audit import appliers
from audit.appliers import applier_of, topic_of
from audit.stream_replay import StreamReplay
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import AccountOpened, CheckoutPaid, CreditsSpent
from ledger.store.hash_chain import GENESIS, event_hash_at
from ledger.store.mapper import MsgspecMapper


@pytest.fixture(autouse=True)
def _appliers_found_afresh() -> Iterator[None]:
    kept = dict(appliers.APPLIERS)
    appliers.APPLIERS.clear()
    yield
    appliers.APPLIERS.clear()
    appliers.APPLIERS.update(kept)


def test_events_are_applied_by_their_own_aggregate_method() -> None:
    assert applier_of(CreditsSpent) == (CreditAccount, CreditAccount._spent)
    assert applier_of(CheckoutPaid)[0] is CheckoutSession
    assert applier_of(AccountOpened) == (None, None)  # it makes its aggregate: the library's mutate


def test_an_evolve_that_does_more_is_called_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    original = CreditAccount.evolve

    def evolve(self: Any, event: Any) -> None:
        original(self, event)

    monkeypatch.setattr(CreditAccount, "evolve", evolve)
    assert applier_of(CreditsSpent) == (None, None)


def test_a_topic_keeps_the_applier_of_the_class_its_fast_decoder_makes() -> None:
    for kind in (CreditsSpent, CheckoutPaid, AccountOpened):
        assert topic_of(get_topic(kind))[2:] == applier_of(kind)
    spent = CreditsSpent(
        originator_id=uuid4(),
        originator_version=2,
        timestamp=datetime.now(UTC),
        amount=3,
        from_allowance=3,
        from_topup=0,
        reason="",
    )
    stored = MsgspecMapper().to_stored_event(spent)
    _, decoding, owner, _ = topic_of(stored.topic)
    assert decoding is not None
    assert owner is CreditAccount
    assert decoding[4] is CreditsSpent  # the class its steps make


def test_a_topic_that_names_no_class_has_no_applier() -> None:
    assert topic_of("ledger.domain.events:NoSuchEvent")[1:] == (None, None, None)


def test_the_replay_decodes_a_state_as_the_mapper_does() -> None:
    """The replay writes the mapper's fast decoder out (``fast_shape``): a field with a default
    left out of the JSON is filled in, a ``class_version`` of the class's is dropped, and the
    events are those the mapper makes."""
    account = CreditAccount.open("acct_decoded", 100, "2026-11")
    account.spend(5, "first", at=datetime(2026, 11, 2, tzinfo=UTC))
    account.spend(7, "second", at=datetime(2026, 11, 3, tzinfo=UTC))
    mapper = MsgspecMapper()
    stored = [mapper.to_stored_event(event) for event in account.collect_events()]
    stored[1] = replace(stored[1], state=stored[1].state.replace(b',"from_grants":{}', b""))
    stored[2] = replace(stored[2], state=stored[2].state[:-1] + b',"class_version":1}')
    replay = StreamReplay({}, {}, max_time_skew=math.inf)
    previous = GENESIS
    decoded = []
    for position, event in enumerate(stored, start=1):
        microseconds = 850_000_000_000_000 + position
        previous = event_hash_at(
            previous, event.originator_id, position, microseconds, event.topic, event.state
        )
        row = (event.originator_id, position, event.topic, event.state, position, microseconds)
        replay.replay((*row, previous, None))
        decoded.append(replay.streams[event.originator_id.bytes].aggregate.__dict__.copy())
    assert replay.findings == []
    expected = None
    for position, event in enumerate(stored, start=1):
        expected = mapper.to_domain_event(event).mutate(expected)
        assert expected.__dict__ == decoded[position - 1]

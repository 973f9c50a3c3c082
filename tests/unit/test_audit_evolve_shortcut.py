"""The audit's replay applies an event by the domain method its aggregate's ``evolve`` would
call, and only while that ``evolve`` is its registry's own (``audit.appliers.applier_of``)."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.utils import get_topic

from audit import appliers
from audit.appliers import applier_of, topic_of
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import AccountOpened, CheckoutPaid, CreditsSpent
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
    _, fast, owner, _ = topic_of(stored.topic)
    assert fast is not None
    assert owner is CreditAccount
    assert type(fast(stored.state, spent.originator_id, 2)) is CreditsSpent


def test_a_topic_that_names_no_class_has_no_applier() -> None:
    assert topic_of("ledger.domain.events:NoSuchEvent")[1:] == (None, None, None)

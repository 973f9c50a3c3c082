"""The audit's replay applies an event by the domain method its aggregate's ``evolve`` would
call, and only while that ``evolve`` is its registry's own (``audit.appliers.applier_of``)."""

from collections.abc import Iterator
from typing import Any

import pytest

from audit import appliers
from audit.appliers import applier_of
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import AccountOpened, CheckoutPaid, CreditsSpent


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

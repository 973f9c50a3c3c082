"""The audit's replay applies an event by the domain method its aggregate's ``evolve`` would
call, and only while that ``evolve`` is its registry's own (``audit.verify._applier``)."""

from collections.abc import Iterator
from typing import Any

import pytest

from audit import verify
from audit.verify import _applier
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import AccountOpened, CheckoutPaid, CreditsSpent


@pytest.fixture(autouse=True)
def _appliers_found_afresh() -> Iterator[None]:
    kept = dict(verify._APPLIERS)
    verify._APPLIERS.clear()
    yield
    verify._APPLIERS.clear()
    verify._APPLIERS.update(kept)


def test_events_are_applied_by_their_own_aggregate_method() -> None:
    assert _applier(CreditsSpent) == (CreditAccount, CreditAccount._spent)
    assert _applier(CheckoutPaid)[0] is CheckoutSession
    assert _applier(AccountOpened) == (None, None)  # it makes its aggregate: the library's mutate


def test_an_evolve_that_does_more_is_called_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    original = CreditAccount.evolve

    def evolve(self: Any, event: Any) -> None:
        original(self, event)

    monkeypatch.setattr(CreditAccount, "evolve", evolve)
    assert _applier(CreditsSpent) == (None, None)

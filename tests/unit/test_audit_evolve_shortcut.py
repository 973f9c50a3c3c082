"""The audit's replay applies an event by the domain method its aggregate's ``evolve`` would
call, and only while ``evolve`` does nothing else (``audit.verify._registry_of``)."""

from typing import Any

from audit.verify import _REGISTRIES, _applier, _registry_of
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import AccountOpened, CheckoutPaid, CreditsSpent
from ledger.domain.evolution import Evolution
from ledger.domain.payment_intent import PaymentIntent

on = Evolution()  # made here as the aggregates make theirs: imported, it compiles otherwise


class _AsWritten:
    def evolve(self, event: Any) -> None:
        on.apply(self, event)


class _DoesMore:
    def evolve(self, event: Any) -> None:
        on.apply(self, event)
        self.evolved = True


def test_every_aggregate_evolve_is_read_as_its_registry() -> None:
    assert [aggregate for aggregate, _ in _REGISTRIES] == [
        CreditAccount,
        CheckoutSession,
        PaymentIntent,
    ]
    assert _registry_of(_AsWritten) is on


def test_an_evolve_that_does_more_is_called_itself() -> None:
    assert _registry_of(_DoesMore) is None


def test_events_are_applied_by_their_own_aggregate_method() -> None:
    assert _applier(CreditsSpent) == (CreditAccount, CreditAccount._spent)
    assert _applier(CheckoutPaid)[0] is CheckoutSession
    assert _applier(AccountOpened) == (None, None)  # it makes its aggregate: the library's mutate

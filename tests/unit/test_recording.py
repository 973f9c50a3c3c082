"""The aggregates' own ``trigger_event`` (``Records``, ledger/domain/evolution.py) records
what the eventsourcing library's would: the same events, stored byte for byte, the same
state, the same refusals."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import eventsourcing.domain
import pytest
from eventsourcing.domain import Aggregate

from ledger.domain import events
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import CreditsSpent
from ledger.domain.evolution import made
from ledger.domain.payment_intent import PaymentIntent
from ledger.store.mapper import MsgspecMapper

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def account_story() -> list[Any]:
    account = CreditAccount.open("acct_recorded", 100, "2026-11")
    account.purchase("cs_1", 50)
    account.grant("g1", 30, priority=1, expires_at=NOW + timedelta(days=3), reason="promo", at=NOW)
    account.spend(120, "job", NOW)
    account.place_hold("h1", 20, "hold", NOW + timedelta(hours=1), NOW)
    account.capture_hold("h1", 5, NOW)
    account.place_hold("h2", 10, "hold", NOW + timedelta(hours=1), NOW)
    account.claw_back("cs_1", 40)
    account.change_allowance(200)
    account.set_low_balance_threshold(7)
    account.expire_hold("h2", NOW + timedelta(hours=2))
    account.expire_grant("g1", NOW + timedelta(days=4))
    account.reset_month("2026-12")
    account.reverse_for_dispute("cs_1", "dp_1", 5)
    account.restore_after_dispute("cs_1", "dp_1", 5)
    return [account]


def payment_story() -> list[Any]:
    session = CheckoutSession.request(
        session_id="cs_recorded",
        account_id="acct_recorded",
        credits=10,
        amount=100,
        currency="usd",
        checkout_url="https://checkout.invalid/cs_recorded",
        expires_at=1_800_000_000,
    )
    session.pay(payment_intent="pi_recorded", amount_paid=100, currency="usd")
    session.refund(40)
    session.dispute("dp_1", "needs_response", 60)
    intent = PaymentIntent.record("pi_recorded")
    intent.link("cs_recorded")
    intent.hold_refund(40)
    return [session, intent]


def recorded(
    story: Callable[[], list[Any]], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[Any, ...]]:
    # Events recorded without a time of their own are stamped now: a clock that moves a
    # second a call, from the same start for both.
    seconds = itertools.count()
    monkeypatch.setattr(
        eventsourcing.domain,
        "datetime_now_with_tzinfo",
        lambda: NOW + timedelta(seconds=next(seconds)),
    )
    mapper = MsgspecMapper()
    told = []
    for aggregate in story():
        events = aggregate.collect_events()
        told.append(
            (
                type(aggregate),
                dict(vars(aggregate)),
                events,
                [mapper.to_stored_event(e) for e in events],
            )
        )
    return told


def librarys_never_going_back(aggregate: Any, event_class: type[Any], **kwargs: Any) -> None:
    """The library's ``trigger_event``, with the one rule ours adds: an event is never
    stamped earlier than its aggregate's last (the story's explicit times, at NOW, come
    after events the clock stamped later)."""
    timestamp = kwargs.get("timestamp") or event_class.create_timestamp()
    kwargs["timestamp"] = max(timestamp, aggregate.modified_on)
    Aggregate.trigger_event(aggregate, event_class, **kwargs)


def test_an_event_is_never_stamped_before_its_aggregates_last() -> None:
    account = CreditAccount.open("acct_not_back", 100, "2026-11")
    later = account.modified_on + timedelta(hours=1)
    account.spend(1, "later", later)
    account.spend(1, "decided late", later - timedelta(minutes=1))
    account.purchase("cs_1", 5)  # the wall clock's time, earlier still

    assert [e.timestamp for e in account.collect_events()[1:]] == [later] * 3


@pytest.mark.parametrize("story", [account_story, payment_story])
def test_the_same_events_and_state_as_the_librarys_trigger_event(
    story: Callable[[], list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = recorded(story, monkeypatch)
    for cls in (CreditAccount, CheckoutSession, PaymentIntent):
        monkeypatch.setattr(cls, "trigger_event", librarys_never_going_back)

    librarys = recorded(story, monkeypatch)

    assert ours == librarys
    assert sum(len(events) for _, _, events, _ in ours) > 5


@pytest.mark.parametrize("trigger", [Aggregate.trigger_event, CreditAccount.trigger_event])
def test_a_refused_event_changes_nothing_and_is_not_recorded(trigger: Any) -> None:
    account = CreditAccount.open("acct_refused", 100, "2026-11")
    account.collect_events()
    before = dict(vars(account))

    with pytest.raises(KeyError):  # a grant the account does not have
        trigger(
            account,
            CreditsSpent,
            amount=1,
            from_allowance=0,
            from_topup=0,
            reason="r",
            from_grants={"g_unknown": 1},
        )
    with pytest.raises(TypeError, match="Can't construct event"):
        trigger(account, CreditsSpent, amount=1)

    assert vars(account) == before


def test_an_event_is_made_as_its_dataclass_makes_it() -> None:
    """``made`` gives each field as the dataclass's ``__init__`` would (a default of its
    own to each event, fields given in any order stored in the class's), and refuses what
    it refuses: an unknown field, a missing one, an id that is not a UUID."""
    account = CreditAccount.open("acct_made", 100, "2026-11")
    account.collect_events()
    mapper = MsgspecMapper()

    account.trigger_event(CreditsSpent, reason="r", from_topup=0, from_allowance=1, amount=1)
    account.trigger_event(CreditsSpent, amount=1, from_allowance=1, from_topup=0, reason="r")
    first, second = account.collect_events()

    assert first.from_grants == {}
    assert first.from_grants is not second.from_grants
    library = CreditsSpent(
        originator_id=first.originator_id,
        originator_version=first.originator_version,
        timestamp=first.timestamp,
        amount=1,
        from_allowance=1,
        from_topup=0,
        reason="r",
    )
    assert first == library
    assert mapper.to_stored_event(first) == mapper.to_stored_event(library)
    with pytest.raises(TypeError, match=r"Can't construct event .*unexpected field 'amont'"):
        account.trigger_event(CreditsSpent, amont=1, from_allowance=1, from_topup=0, reason="")
    with pytest.raises(TypeError, match="non-UUID originator_id"):
        made(CreditsSpent, {**vars(library), "originator_id": "acct_made"})
    assert account.version == second.originator_version


def test_an_event_class_that_checks_more_is_not_made_unchecked() -> None:
    """``made`` runs only the library's ``__post_init__``: a class with a check of its own is
    refused outright, never made without that check."""

    @dataclasses.dataclass(frozen=True)
    class Checked(CreditsSpent):
        def __post_init__(self) -> None:
            super().__post_init__()
            if self.amount <= 0:
                raise ValueError("amount")

    with pytest.raises(TypeError, match=r"made\(\) cannot make"):
        made(Checked, {})


@pytest.mark.parametrize(
    "start",
    [
        lambda: CreditAccount.open("acct_started", 100, "2026-11"),
        lambda: CheckoutSession.request(
            session_id="cs_started",
            account_id="acct_started",
            credits=10,
            amount=1000,
            currency="usd",
            checkout_url="https://checkout.invalid/cs_started",
            expires_at=1_800_000_000,
        ),
        lambda: PaymentIntent.record("pi_started"),
    ],
)
def test_a_streams_first_event_makes_the_aggregate_the_library_makes(
    start: Callable[[], Any],
) -> None:
    mapper = MsgspecMapper()
    [first] = start().collect_events()
    loaded = mapper.to_domain_event(mapper.to_stored_event(first))

    ours = loaded.mutate(None)
    librarys: Any = eventsourcing.domain.CanInitAggregate.mutate(loaded, None)

    assert type(ours) is type(librarys)
    # The same attributes with the same values, set in the same order (the cache copies
    # the instance's dict as it is, ledger/store/repository.py).
    assert list(vars(ours).items()) == list(vars(librarys).items())
    assert ours._pending_events == []
    assert ours._pending_events is not librarys._pending_events


def test_an_aggregate_with_an_init_of_its_own_is_made_by_the_library() -> None:
    class Initialised(Aggregate):
        def __init__(self, label: str) -> None:
            self.label = label

    assert events._made_plainly(CreditAccount)
    assert not events._made_plainly(Initialised)

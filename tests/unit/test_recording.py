"""The aggregates' own ``trigger_event`` (``Records``, ledger/domain/evolution.py) records
what the eventsourcing library's would: the same events, stored byte for byte, the same
state, the same refusals. Both of its roads are held to the library's: each event class's
own recorder (``_recorder``) and the general one (``recorded_generally``)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import eventsourcing.domain
import pytest
from eventsourcing.domain import Aggregate

from ledger.domain import account as account_module
from ledger.domain import events
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import CreditsSpent, reset_command_time, set_command_time
from ledger.domain.evolution import Records, made, recorded_generally
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
    account.restore_after_refund("cs_1", "re_1", 3)
    account.place_hold("h3", 4, "hold", NOW + timedelta(hours=1), NOW)
    account.release_hold("h3")
    account.grant("g2", 9, priority=2, expires_at=None, reason="gift", at=NOW)
    account.void_grant("g2", "withdrawn", NOW)
    return [account]


def a_session(session_id: str) -> CheckoutSession:
    return CheckoutSession.request(
        session_id=session_id,
        account_id="acct_recorded",
        credits=10,
        amount=100,
        currency="usd",
        checkout_url=f"https://checkout.invalid/{session_id}",
        expires_at=1_800_000_000,
    )


def payment_story() -> list[Any]:
    session = a_session("cs_recorded")
    session.pay(payment_intent="pi_recorded", amount_paid=100, currency="usd")
    session.refund(40)
    session.update_refund("re_1", 40, "failed")
    session.dispute("dp_1", "needs_response", 60)
    mismatched, expired, failed = a_session("cs_short"), a_session("cs_old"), a_session("cs_no")
    mismatched.pay(payment_intent="pi_short", amount_paid=99, currency="usd")
    expired.expire()
    failed.fail()
    intent = PaymentIntent.record("pi_recorded")
    intent.link("cs_recorded")
    intent.hold_refund(40)
    intent.hold_refund_update("re_2", 10, "pending")
    intent.hold_dispute("dp_2", "needs_response", None)
    return [session, mismatched, expired, failed, intent]


READ_ONLY = {events.PaymentDisputed, events.DisputeClosed}
"""Event classes kept to read old streams: no aggregate records them any more."""


def recorded_classes() -> set[type]:
    """Every event class the aggregates record with ``trigger_event``."""
    bases = (events.AccountEvent, events.CheckoutEvent, events.PaymentIntentEvent)
    return {
        value
        for value in vars(events).values()
        if isinstance(value, type) and issubclass(value, bases) and value not in bases
    } - READ_ONLY


def recorded(
    story: Callable[[], list[Any]], monkeypatch: pytest.MonkeyPatch, road: Callable[..., None]
) -> list[tuple[Any, ...]]:
    """What ``story`` records with ``road`` as its aggregates' ``trigger_event``: after each
    event, the event stored and the aggregate's whole state; at the end, each aggregate's
    events."""
    # Events recorded without a time of their own are stamped now: a clock that moves a
    # second a call, from the same start for both.
    seconds = itertools.count()
    monkeypatch.setattr(
        eventsourcing.domain,
        "datetime_now_with_tzinfo",
        lambda: NOW + timedelta(seconds=next(seconds)),
    )
    mapper = MsgspecMapper()
    told: list[tuple[Any, ...]] = []

    def recording(aggregate: Any, event_class: type[Any], **kwargs: Any) -> None:
        road(aggregate, event_class, **kwargs)
        event = aggregate._pending_events[-1]
        assert type(event) is event_class
        # The state as it is now (some of it is changed in place later): its repr, which
        # shows every attribute's value (the views' too, read-only mappings).
        state = repr(vars(aggregate))
        assert " at 0x" not in state
        # The event's attributes in its dict's order too: the encoder writes them in it.
        made = list(vars(event).items())
        told.append((event_class, mapper.to_stored_event(event), made, state))

    for cls in (CreditAccount, CheckoutSession, PaymentIntent):
        monkeypatch.setattr(cls, "trigger_event", recording)
    for aggregate in story():
        told.append((type(aggregate), aggregate.collect_events()))
    monkeypatch.undo()
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


def generally(aggregate: Any, event_class: type[Any], **kwargs: Any) -> None:
    recorded_generally(aggregate, event_class, kwargs)


@pytest.mark.parametrize("at", [None, NOW - timedelta(days=1)], ids=["clock", "command"])
@pytest.mark.parametrize("road", [Records.trigger_event, generally], ids=["own", "general"])
@pytest.mark.parametrize("story", [account_story, payment_story])
def test_the_same_events_and_state_as_the_librarys_trigger_event(
    story: Callable[[], list[Any]],
    road: Callable[..., None],
    at: datetime | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each road records, after each event, what the library's does; events without a time
    of their own are stamped with the wall clock, or inside a command with its time (earlier
    than the clock's: a later one would start the stream and raise every clock time to it)."""
    token = set_command_time(at)
    try:
        ours = recorded(story, monkeypatch, road)
        librarys = recorded(story, monkeypatch, librarys_never_going_back)
    finally:
        reset_command_time(token)

    for one, other in zip(ours, librarys, strict=True):  # one entry at a time: the first apart
        assert one == other


def test_the_stories_record_every_event_class_the_aggregates_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = [
        *recorded(account_story, monkeypatch, Records.trigger_event),
        *recorded(payment_story, monkeypatch, Records.trigger_event),
    ]
    stored = {entry[0] for entry in told if len(entry) == 4}  # an event's entries, not the ends

    assert stored == recorded_classes()
    assert len(stored) > 25


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


@dataclasses.dataclass(frozen=True)
class CheckedSpend(CreditsSpent):
    """An event class with a check of its own (no aggregate records one)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.amount <= 0:
            raise ValueError("amount")


def test_an_event_class_that_checks_more_is_not_made_unchecked() -> None:
    """``made`` runs only the library's ``__post_init__``: a class with a check of its own is
    refused outright, never made without that check."""
    with pytest.raises(TypeError, match=r"made\(\) cannot make"):
        made(CheckedSpend, {})


def test_an_event_class_that_checks_more_is_recorded_by_the_librarys_road(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``trigger_event`` makes such a class with its own ``__init__``: its check runs."""
    monkeypatch.setitem(account_module.on._methods, CheckedSpend, CreditAccount._spent)
    account = CreditAccount.open("acct_checked", 100, "2026-11")
    account.collect_events()
    before = dict(vars(account))
    spend = {"from_allowance": 0, "from_topup": 0, "reason": "r"}

    with pytest.raises(ValueError, match="amount"):
        account.trigger_event(CheckedSpend, amount=0, **spend)
    assert vars(account) == before
    account.trigger_event(CheckedSpend, amount=2, **{**spend, "from_allowance": 2})
    [event] = account.collect_events()

    assert type(event) is CheckedSpend
    assert (event.amount, event.originator_version, account.version) == (2, 2, 2)
    assert account.free_allowance == 98


def test_an_aggregate_whose_id_is_not_a_uuid_records_nothing() -> None:
    account = CreditAccount.open("acct_not_uuid", 100, "2026-11")
    account.collect_events()
    account._id = str(account.id)  # type: ignore[assignment]
    before = dict(vars(account))

    with pytest.raises(TypeError, match="non-UUID originator_id"):
        account.purchase("cs_1", 5)
    assert vars(account) == before


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

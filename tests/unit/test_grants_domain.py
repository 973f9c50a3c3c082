"""Grants on the account, without I/O: burn order, expiry at the command's time, holds, voids."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.commands import GrantCredits
from ledger.domain.account import CreditAccount
from ledger.domain.errors import GrantClosed, HoldHasExpired, InsufficientCredits, InvalidGrant
from ledger.domain.events import CreditsGranted, CreditsSpent, HoldCaptured
from ledger.handlers.expiries import expired_holds
from ledger.handlers.grants import GrantAnswer, grant_claim, grant_replayed
from ledger.store.claims import IdempotencyKeyReused, StoredAnswer, request_fingerprint
from ledger.store.mapper import MsgspecMapper
from ledger.store.repository import snapshot_of

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=7)


def account(allowance: int = 100, topup: int = 0) -> CreditAccount:
    opened = CreditAccount.open("acct_1", allowance, "2026-12")
    if topup:
        opened.purchase("cs_1", topup)
    return opened


def grant(
    credits: CreditAccount,
    grant_id: str,
    amount: int,
    *,
    priority: int = 50,
    expires_in: timedelta | None = None,
) -> None:
    expires_at = None if expires_in is None else NOW + expires_in
    credits.grant(grant_id, amount, priority=priority, expires_at=expires_at, reason="", at=NOW)


def last_spend(credits: CreditAccount) -> CreditsSpent:
    spent = [e for e in credits.pending_events if isinstance(e, CreditsSpent)]
    return spent[-1]


def test_spends_burn_the_allowance_then_grants_by_priority_expiry_and_age_then_topups() -> None:
    credits = account(allowance=100, topup=1000)
    grant(credits, "g_late", 50, priority=10)  # no expiry: after those that expire
    grant(credits, "g_soon", 50, priority=10, expires_in=timedelta(days=1))
    grant(credits, "g_low", 50, priority=90)
    grant(credits, "g_old", 50, priority=10, expires_in=timedelta(days=1))  # same as g_soon, newer

    credits.spend(330, "job", at=NOW)

    spent = last_spend(credits)
    assert spent.from_allowance == 100
    assert spent.from_grants == {"g_soon": 50, "g_old": 50, "g_late": 50, "g_low": 50}
    assert spent.from_topup == 30
    assert credits.granted == 0
    assert credits.balance == 970


def test_a_grant_past_its_expiry_is_not_spent_even_before_the_sweeper_records_it() -> None:
    credits = account(allowance=0)
    grant(credits, "g_1", 100, expires_in=timedelta(hours=1))

    with pytest.raises(InsufficientCredits):
        credits.spend(10, "too late", at=NOW + timedelta(hours=1))
    credits.spend(10, "in time", at=NOW + timedelta(minutes=59))

    assert credits.expire_grant("g_1", NOW + timedelta(hours=1)) == 90
    assert credits.expire_grant("g_1", NOW + timedelta(hours=2)) is None  # exactly once
    assert credits.granted == 0


def test_a_hold_keeps_its_grant_share_after_the_expiry_and_what_it_does_not_capture_lapses() -> (
    None
):
    credits = account(allowance=0, topup=100)
    grant(credits, "g_1", 100, expires_in=timedelta(hours=1))
    credits.place_hold("h_1", 150, "job", LATER, at=NOW)  # 100 from the grant, 50 top-ups

    assert credits.expire_grant("g_1", NOW + timedelta(hours=2)) == 0  # all of it reserved
    assert credits.granted == 100  # still reserved inside the balance
    credits.capture_hold("h_1", 120, NOW + timedelta(hours=2))

    captured = [e for e in credits.pending_events if isinstance(e, HoldCaptured)][-1]
    assert captured.from_grants == {"g_1": 100}
    assert captured.from_topup == 20
    assert captured.grants_lapsed == {}
    assert (credits.granted, credits.topup_balance, credits.grants) == (0, 80, {})


def test_a_release_gives_back_to_a_live_grant_and_lets_an_expired_one_lapse() -> None:
    credits = account(allowance=0)
    grant(credits, "live", 40, priority=1)
    grant(credits, "ending", 60, priority=2, expires_in=timedelta(hours=1))
    credits.place_hold("h_1", 100, "job", LATER, at=NOW)
    credits.expire_grant("ending", NOW + timedelta(hours=1))

    settlement = credits.release_hold("h_1")

    assert settlement.grants_lapsed == {"ending": 60}
    assert credits.granted == 40
    assert credits.available == 40


def test_a_void_lapses_what_remains_once_and_a_second_void_is_refused() -> None:
    credits = account(allowance=0)
    grant(credits, "g_1", 100)
    credits.spend(30, "job", at=NOW)

    assert credits.void_grant("g_1", "promotion ended") == 70
    with pytest.raises(GrantClosed):
        credits.void_grant("g_1", "again")
    assert credits.balance == 0


def test_monthly_resets_leave_grants_alone() -> None:
    credits = account(allowance=100)
    grant(credits, "g_1", 100)
    credits.spend(150, "job", at=NOW)  # 100 allowance, 50 of the grant

    credits.reset_month("2027-01")

    assert (credits.allowance_remaining, credits.granted) == (100, 50)


def test_a_grant_in_the_past_or_with_a_bad_priority_is_refused() -> None:
    credits = account()
    with pytest.raises(InvalidGrant):
        credits.grant("g", 10, priority=50, expires_at=NOW, reason="", at=NOW)
    with pytest.raises(InvalidGrant):
        credits.grant("g", 10, priority=101, expires_at=None, reason="", at=NOW)


def test_a_grant_expiring_at_a_time_without_an_offset_is_refused_and_not_recorded() -> None:
    """A naive time names no instant: compared with the command's time it raised TypeError
    (a 500 to any caller but the API and the CLI, which refuse it first); recorded, every
    burn-order sort of the account's grants would raise it."""
    credits = account()
    naive = datetime(2999, 1, 1)  # noqa: DTZ001
    with pytest.raises(InvalidGrant, match="expires_at must have an offset"):
        credits.grant("g", 10, priority=50, expires_at=naive, reason="", at=NOW)
    assert credits.grants == {}
    assert len(credits.pending_events) == 1  # AccountOpened


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(1, 300), st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.just("spend"), st.integers(1, 400), st.just(0), st.just(0)),
        st.tuples(st.just("hold"), st.integers(1, 300), st.just(0), st.just(0)),
        st.tuples(st.just("capture"), st.integers(0, 300), st.just(0), st.just(0)),
        st.tuples(st.just("release"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("tick"), st.integers(1, 3), st.just(0), st.just(0)),
        st.tuples(st.just("void"), st.integers(0, 10), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_grants_are_accounted_for_whatever_happens(
    operations: list[tuple[str, int, int, int]],
) -> None:
    """No bucket or grant below zero, nothing expires twice, the burn order holds, every
    credit granted is spent from a grant, lapsed, or still remains, and ``balances()`` is
    the three properties."""
    credits = account(allowance=50, topup=200)
    clock = NOW
    granted = spent_from_grants = lapsed = 0
    grant_ids: list[str] = []
    holds: list[str] = []
    placed = 0
    expired: set[str] = set()
    for kind, n, priority, days in operations:
        try:
            if kind == "grant":
                grant_id = f"g_{len(grant_ids)}"
                expires_in = None if days == 0 else timedelta(days=days)
                grant(credits, grant_id, n, priority=priority, expires_in=expires_in)
                grant_ids.append(grant_id)
                granted += n
            elif kind == "spend":
                credits.spend(n, "job", at=clock)
                spent_from_grants += sum(last_spend(credits).from_grants.values())
            elif kind == "hold":
                placed += 1
                hold_id = f"h_{placed}"
                credits.place_hold(hold_id, n, "job", clock + timedelta(days=30), at=clock)
                holds.append(hold_id)
            elif kind in ("capture", "release") and holds:
                hold_id = holds.pop(0)
                settlement = (
                    credits.capture_hold(hold_id, min(n, credits.hold(hold_id).amount), clock)
                    if kind == "capture"
                    else credits.release_hold(hold_id)
                )
                spent_from_grants += sum(settlement.from_grants.values())
                lapsed += sum(settlement.grants_lapsed.values())
            elif kind == "tick":
                clock += timedelta(days=n)
                for grant_id in list(credits.grants):
                    ended = credits.expire_grant(grant_id, clock)
                    if ended is not None:
                        assert grant_id not in expired, "a grant expired twice"
                        expired.add(grant_id)
                        lapsed += ended
            elif kind == "void" and grant_ids:
                lapsed += credits.void_grant(grant_ids[n % len(grant_ids)], "gone")
        except (InsufficientCredits, GrantClosed, HoldHasExpired):
            pass
        assert all(g.remaining >= 0 for g in credits.grants.values())
        assert credits.allowance_remaining >= 0
        assert credits.available_at(clock) >= 0
        # The answers' three at once say what the properties say.
        assert credits.balances() == (credits.balance, credits.held, credits.available)
        assert granted == spent_from_grants + lapsed + credits.granted
        assert credits.granted == sum(g.remaining for g in credits.grants.values())
        assert list(credits.grants) == sorted(
            credits.grants,
            key=lambda g: (
                credits.grants[g].priority,
                credits.grants[g].expires_at or datetime.max.replace(tzinfo=UTC),
                credits.grants[g].order,
            ),
        )


def test_a_snapshot_keeps_grants_in_burn_order_with_their_expiry_and_total() -> None:
    credits = account(allowance=0)
    grant(credits, "g_late", 30, priority=60)
    grant(credits, "g_first", 20, priority=5, expires_in=timedelta(days=2))
    credits.place_hold("h1", 25, "job", NOW + timedelta(days=1), at=NOW)  # 20 of g_first, 5
    credits.void_grant("g_first", "gone")  # kept: a hold reserves all of it
    mapper = MsgspecMapper()

    snapshot = snapshot_of(credits)
    restored = mapper.to_domain_event(mapper.to_stored_event(snapshot)).mutate(None)

    assert list(restored.grants) == ["g_first", "g_late"]
    assert restored.grants == credits.grants
    assert restored.grants["g_first"].expires_at == NOW + timedelta(days=2)
    assert (restored.granted, restored.closed_grants) == (50, frozenset())
    restored.release_hold("h1")
    assert (restored.granted, restored.closed_grants) == (30, frozenset({"g_first"}))


def test_an_offset_with_seconds_is_refused_and_one_granted_before_keeps_its_instant() -> None:
    # datetime.fromisoformat (the CLI's --expires-at) takes "+05:30:15"; msgspec writes such
    # an offset without its seconds, so a snapshot moved the grant's expiry 15 s later
    # (audit: snapshot-mismatch), and cannot read it back.
    odd = timezone(timedelta(hours=5, minutes=30, seconds=15))
    expires_at = datetime(2027, 1, 1, tzinfo=odd)
    credits = account(allowance=0)
    with pytest.raises(InvalidGrant, match="whole minutes"):
        credits.grant("g", 10, priority=50, expires_at=expires_at, reason="", at=NOW)

    credits.trigger_event(  # as the CLI recorded it before
        CreditsGranted,
        grant_id="g_old",
        amount=10,
        priority=50,
        expires_at=expires_at.isoformat(),
        reason="",
    )
    mapper = MsgspecMapper()
    snapshot = snapshot_of(credits)
    restored = mapper.to_domain_event(mapper.to_stored_event(snapshot)).mutate(None)

    assert credits.grants["g_old"].expires_at == expires_at
    assert restored.grants == credits.grants


def test_expiries_due_are_recorded_in_the_order_they_fell_due() -> None:
    """A hold's share of a grant that expired before the hold lapses with the hold (its
    answer and ``hold.expired`` say so); one that expired after it goes back to the grant
    and lapses with it. A sweep that came late recorded holds first, so what each event
    said lapsed depended on when the sweeper came."""
    credits = account(allowance=0)
    grant(credits, "early", 100, priority=1, expires_in=timedelta(hours=1))
    grant(credits, "late", 100, priority=2, expires_in=timedelta(hours=3))
    credits.place_hold("h_1", 150, "job", NOW + timedelta(hours=2), at=NOW)  # 100 + 50
    credits.collect_events()

    answers = expired_holds(credits, NOW + timedelta(hours=4))

    recorded = [
        (type(e).__name__, getattr(e, "grant_id", None), getattr(e, "lapsed", None))
        for e in credits.collect_events()
    ]
    assert recorded == [
        ("GrantExpired", "early", 0),  # all of it reserved
        ("HoldExpired", None, 0),  # no allowance share lapsed
        ("GrantExpired", "late", 100),  # its 50 came back, then lapsed with it
    ]
    assert (answers["h_1"].released, answers["h_1"].lapsed) == (150, 100)
    assert (credits.granted, credits.balance) == (0, 0)


def test_a_grant_claim_recorded_with_the_offset_as_written_still_answers_its_retry() -> None:
    """Claims recorded before expiries were compared in UTC kept the fingerprint of the
    offset as written: the same request, written the same way, gets the first answer."""
    plus_one = timezone(timedelta(hours=1))
    command = GrantCredits(
        account_id="acct_1",
        amount=5,
        priority=50,
        expires_at=datetime(2030, 1, 1, 1, 0, tzinfo=plus_one),
        reason="",
        idempotency_key="k",
    )
    as_written = request_fingerprint(
        {"amount": 5, "priority": 50, "expires_at": "2030-01-01T01:00:00+01:00", "reason": ""}
    )
    first = GrantAnswer(
        grant_id="grant_1",
        account_id="acct_1",
        amount=5,
        remaining=5,
        priority=50,
        expires_at="2030-01-01T00:00:00Z",
        reason="",
        status="active",
        balance=5,
        granted=5,
        available=5,
    )
    answer = msgspec.json.encode(first)

    assert grant_replayed(StoredAnswer(as_written, answer), command) == first
    assert grant_replayed(StoredAnswer(grant_claim(command).fingerprint, answer), command) == first
    later = msgspec.structs.replace(command, expires_at=datetime(2030, 1, 1, 2, 0, tzinfo=plus_one))
    with pytest.raises(IdempotencyKeyReused):
        grant_replayed(StoredAnswer(as_written, answer), later)


EXPIRING = st.lists(
    st.tuples(st.integers(1, 120), st.integers(0, 2), st.integers(0, 6)), max_size=5
)


@settings(max_examples=300, deadline=None)
@given(EXPIRING, EXPIRING)
def test_what_expiries_let_lapse_does_not_depend_on_when_they_are_swept(
    grants: list[tuple[int, int, int]], holds: list[tuple[int, int, int]]
) -> None:
    """Grants and holds expiring in any order (minute 0: never), swept every minute or once
    at the end: each event says the same lapsed, and the account ends the same."""

    def history(sweeps: list[int]) -> tuple[list[tuple[str, object, object]], CreditAccount]:
        credits = account(allowance=50, topup=100)
        for n, (amount, priority, minutes) in enumerate(grants):
            expires_in = timedelta(minutes=minutes) if minutes else None
            grant(credits, f"g_{n}", amount, priority=priority, expires_in=expires_in)
        for n, (amount, _, minutes) in enumerate(holds):
            expires_at = NOW + timedelta(minutes=minutes or 7)
            with contextlib.suppress(InsufficientCredits):
                credits.place_hold(f"h_{n}", amount, "job", expires_at, at=NOW)
        credits.collect_events()
        for minute in sweeps:
            expired_holds(credits, NOW + timedelta(minutes=minute))
        said = [
            (
                getattr(e, "grant_id", None) or getattr(e, "hold_id", None),
                getattr(e, "lapsed", None),
                getattr(e, "grants_lapsed", None),
            )
            for e in credits.collect_events()
        ]
        return sorted(said, key=str), credits

    timely, swept_each_minute = history(list(range(1, 8)))
    late, swept_once = history([7])

    assert late == timely
    assert swept_once.grants == swept_each_minute.grants
    assert (swept_once.granted, swept_once.balance) == (
        swept_each_minute.granted,
        swept_each_minute.balance,
    )


def test_a_grants_lapse_repays_no_top_up_debt() -> None:
    """The policy (README, Grants): refunds and disputes never touch grants, so what a
    refund's debt kept of a grant from use lapses with it, and the debt stays to be repaid
    by the next purchase or reset, as the allowance that lapses at a reset repays it."""
    credits = account(allowance=100, topup=1000)
    credits.spend(1000, "job", at=NOW)  # the allowance, then 900 of the top-ups
    grant(credits, "g_1", 500, expires_in=timedelta(days=1))
    credits.claw_back("cs_1", 1000)  # a refund of credits already spent: a debt of 900
    assert (credits.topup_balance, credits.granted, credits.balance) == (-900, 500, -400)

    assert credits.expire_grant("g_1", LATER) == 500

    assert (credits.topup_balance, credits.granted, credits.balance) == (-900, 0, -900)
    credits.reset_month("2027-01")
    assert (credits.topup_balance, credits.allowance_remaining) == (-900, 100)

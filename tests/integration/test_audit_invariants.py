"""``ledger audit verify`` judges settlements by ``CreditAccount.settlement``, and also
without it: a bug in that rule must not pass for right because the audit shares it.

The rule is made wrong here in this process only, where both the service and the audit
run, so these audits are not split over processes (``--jobs``).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from audit.verify import verify
from ledger.commands import GrantCredits, PlaceHold, SettleHold, VoidGrant
from ledger.domain.account import CreditAccount
from ledger.domain.holds import Settlement
from tests.conftest import IsolatedDatabase
from tests.support.ledger import open_account

ACCOUNT = "acct_rules"


def _wrong_rule(monkeypatch: pytest.MonkeyPatch, wrong: Any) -> None:
    right = CreditAccount.settlement

    def settlement(self: CreditAccount, hold_id: str, captured: int) -> Settlement:
        return wrong(right(self, hold_id, captured))  # type: ignore[no-any-return]

    monkeypatch.setattr(CreditAccount, "settlement", settlement)


async def _hold(books: Any, key: str, amount: int) -> str:
    placed = await books.execute(
        PlaceHold(
            account_id=ACCOUNT,
            amount=amount,
            expires_in_seconds=600,
            reason=key,
            idempotency_key=key,
        )
    )
    return str(placed.hold_id)


async def _grant(books: Any, amount: int) -> str:
    granted = await books.execute(
        GrantCredits(
            account_id=ACCOUNT,
            amount=amount,
            priority=10,
            expires_at=None,
            reason="promo",
            idempotency_key="grant",
        )
    )
    return str(granted.grant_id)


async def test_a_rule_that_spends_top_ups_a_hold_never_reserved_is_found(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture of an allowance hold recorded as spent from top-ups: the allowance stays
    whole and the top-ups go into debt, credits out of nothing the rule calls right."""
    books = isolated_db.ledger()
    await open_account(books, ACCOUNT, 1000)
    hold_id = await _hold(books, "job", 100)
    _wrong_rule(
        monkeypatch,
        lambda s: msgspec.structs.replace(
            s, from_allowance=0, from_topup=s.from_topup + s.from_allowance
        ),
    )
    await books.execute(
        SettleHold(account_id=ACCOUNT, hold_id=hold_id, outcome="captured", amount=60)
    )

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.version, f.detail) for f in report.findings]
    assert found == [
        ("settlement-unbalanced", 3, f"hold {hold_id} captured, as the rule gives, with 60 "
         "spent of its 0 of top-ups"),
    ]  # fmt: skip


async def test_a_rule_that_keeps_a_voided_grant_s_share_is_found(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that forgets the shares of grants voided while the hold was open: the
    grant stays closed with credits in the balance that nothing can spend or lapse."""
    books = isolated_db.ledger()
    await open_account(books, ACCOUNT, 0)
    grant_id = await _grant(books, 100)
    hold_id = await _hold(books, "job", 70)
    await books.execute(VoidGrant(account_id=ACCOUNT, grant_id=grant_id, reason="ended"))
    _wrong_rule(monkeypatch, lambda s: msgspec.structs.replace(s, grants_lapsed={}))
    await books.execute(SettleHold(account_id=ACCOUNT, hold_id=hold_id, outcome="released"))

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.version, f.detail) for f in report.findings]
    assert found == [
        ("settlement-unbalanced", 5, f"hold {hold_id} released, as the rule gives, with 0 "
         f"spent and 0 lapsed of its 70 of grant {grant_id}, which is closed: the rest stays "
         "in it"),
    ]  # fmt: skip


async def test_a_rule_that_lets_an_open_grant_s_share_lapse_is_found(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    books = isolated_db.ledger()
    await open_account(books, ACCOUNT, 0)
    grant_id = await _grant(books, 100)
    hold_id = await _hold(books, "job", 70)
    _wrong_rule(
        monkeypatch,
        lambda s: msgspec.structs.replace(s, released=s.released + 5, grants_lapsed={grant_id: 70}),
    )
    await books.execute(SettleHold(account_id=ACCOUNT, hold_id=hold_id, outcome="released"))

    report = await verify(isolated_db.pool)

    found = [(f.kind, f.version, f.detail) for f in report.findings]
    assert found == [
        ("settlement-unbalanced", 4, f"hold {hold_id} released, as the rule gives, with 0 "
         f"captured and 75 released of 70; 70 of grant {grant_id} lapsed, which is open"),
    ]  # fmt: skip

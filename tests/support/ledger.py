"""Writing to the ledger from tests: through the same unit of work and committer as the service."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
from eventsourcing.domain import Aggregate

from ledger.commands import OpenAccount, PlaceHold
from ledger.domain.account import CreditAccount
from ledger.domain.events import (
    HOLD_SETTLEMENTS,
    CreditsGranted,
    CreditsSpent,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldReleased,
)
from ledger.handlers.accounts import Spent, spent_answer
from ledger.handlers.grants import GrantAnswer
from ledger.handlers.hold_answers import Hold
from ledger.service import Ledger
from ledger.store import stats
from ledger.store.claims import Claim
from ledger.store.commit import ClaimRecord
from ledger.times import in_utc


async def open_account(ledger: Ledger, account_id: str, allowance: int = 1000) -> CreditAccount:
    """Open an account as ``POST /v1/accounts`` does."""
    opened: CreditAccount = await ledger.execute(
        OpenAccount(account_id=account_id, monthly_allowance=allowance)
    )
    return opened


_CLAIMED: dict[type, str] = {CreditsSpent: "spend", HoldPlaced: "hold", CreditsGranted: "grant"}
"""Account events a command records with its Idempotency-Key's claim (the audit counts them)."""


async def place_hold(ledger: Ledger, account_id: str, amount: int, seconds: int = 600) -> str:
    """A hold of ``amount`` on the account for ``seconds``, under a key of its own: its id."""
    placed = await ledger.execute(
        PlaceHold(
            account_id=account_id,
            amount=amount,
            expires_in_seconds=seconds,
            reason="",
            idempotency_key=f"hold-{uuid.uuid4().hex}",
        )
    )
    return str(placed.hold_id)


async def save(ledger: Ledger, *aggregates: Aggregate) -> None:
    """Commit aggregates a test changed by hand (their pending events), as a command would:
    with a claim of a key of its own for each spend, hold and grant, answered as the
    service answers it (naming its account, the audit reads that), and each hold's
    settlement claimed with an answer that tells it."""
    repository = ledger.repository
    claims = [
        ClaimRecord(
            Claim(f"{scope}/{account.account_id}", f"saved-{uuid.uuid4()}", b""),
            msgspec.json.encode(_answer(account, event)),
        )
        for account in aggregates
        if isinstance(account, CreditAccount)
        for event in account.pending_events
        if (scope := _CLAIMED.get(type(event))) is not None
    ]
    claims += [
        _settlement_claim(account.account_id, event)
        for account in aggregates
        if isinstance(account, CreditAccount)
        for event in account.pending_events
        if isinstance(event, HOLD_SETTLEMENTS)
    ]
    writes = repository.writes(aggregates, claims)
    await ledger.uow.committer.commit(writes)
    repository.committed(aggregates, writes)


def _answer(
    account: CreditAccount, event: CreditsSpent | HoldPlaced | CreditsGranted
) -> Spent | Hold | GrantAnswer:
    """The answer the service keeps in the claim of the command that recorded ``event``: the
    account's, with the balances after every event saved (figures the audit does not read)."""
    balance, held, available = account.balances()
    if isinstance(event, CreditsSpent):
        return spent_answer(account, event)
    if isinstance(event, HoldPlaced):
        return Hold(
            hold_id=event.hold_id,
            account_id=account.account_id,
            status="held",
            amount=event.amount,
            captured=0,
            released=0,
            reason=event.reason,
            expires_at=in_utc(datetime.fromisoformat(event.expires_at)),
            balance=balance,
            held=held,
            available=available,
        )
    expires_at = event.expires_at
    return GrantAnswer(
        grant_id=event.grant_id,
        account_id=account.account_id,
        amount=event.amount,
        remaining=event.amount,
        priority=event.priority,
        expires_at=None if expires_at is None else in_utc(datetime.fromisoformat(expires_at)),
        reason=event.reason,
        status="active",
        balance=balance,
        granted=account.granted,
        available=available,
    )


def _settlement_claim(
    account_id: str, event: HoldCaptured | HoldReleased | HoldExpired
) -> ClaimRecord:
    """The claim a settlement is recorded with; the answer's other figures are not audited."""
    status = {HoldCaptured: "captured", HoldReleased: "released"}.get(type(event), "expired")
    answer = Hold(
        hold_id=event.hold_id,
        account_id=account_id,
        status=status,  # type: ignore[arg-type]
        amount=0,
        captured=event.captured if isinstance(event, HoldCaptured) else 0,
        released=event.released,
        reason="",
        expires_at="",
        balance=0,
        held=0,
        available=0,
    )
    claim = Claim(f"hold-settlement/{account_id}", event.hold_id, b"")
    return ClaimRecord(claim, msgspec.json.encode(answer))


def conflicts_retried() -> float:
    """Commands decided again after a conflict so far, in this process (the metric's count)."""
    return _conflicts("retried")


def conflicts_given_up() -> float:
    """Commands answered busy (503) after conflicts or a wait for their turn, so far."""
    return _conflicts("gave_up")


def _conflicts(outcome: str) -> float:
    value = stats.REGISTRY.get_sample_value(
        "ledger_concurrency_conflicts_total", {"outcome": outcome}
    )
    return value or 0.0

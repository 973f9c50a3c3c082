"""Accounts: opening, spending, monthly resets and plan changes (the write side)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import msgspec
from eventsourcing.utils import get_topic

from ledger.domain.account import CreditAccount
from ledger.domain.errors import AccountAlreadyExists, AccountNotFound, InsufficientCredits
from ledger.domain.ids import account_stream_id
from ledger.keyed_locks import KeyedLocks
from ledger.ports import Clock, system_clock
from ledger.repository import Repository, retry_on_conflict
from ledger.store.event_store import ConcurrencyConflict, EventStore
from ledger.store.group_commit import IdempotencyRecord
from ledger.store.idempotency import (
    IdempotencyKeyTaken,
    IdempotencyStore,
    StoredAnswer,
    replay,
    request_fingerprint,
)

A = TypeVar("A", bound=msgspec.Struct)


def billing_period(clock: Clock) -> str:
    """The calendar month ``YYYY-MM`` it is now, in UTC."""
    return clock().strftime("%Y-%m")


class SpendCredits(msgspec.Struct, frozen=True):
    """Command: take ``amount`` credits from an account, once per idempotency key."""

    account_id: str
    amount: int
    reason: str
    idempotency_key: str


class Spent(msgspec.Struct, frozen=True):
    """The answer to a spend: where the credits came from and the balance after."""

    account_id: str
    amount: int
    from_allowance: int
    from_topup: int
    reason: str
    balance: int
    allowance_remaining: int
    topup_balance: int
    monthly_allowance: int
    period: str


class AccountService:
    """Commands and write-side reads on credit accounts."""

    def __init__(
        self,
        repository: Repository,
        store: EventStore,
        idempotency: IdempotencyStore,
        clock: Clock = system_clock,
    ) -> None:
        self.repository = repository
        self.store = store
        self.idempotency = idempotency
        self.clock = clock
        self.locks = KeyedLocks()

    async def open(self, account_id: str, monthly_allowance: int) -> CreditAccount:
        """Open an account with its full allowance available for the current period."""
        account = CreditAccount(
            account_id=account_id,
            monthly_allowance=monthly_allowance,
            period=billing_period(self.clock),
        )
        try:
            await self.repository.save(account)
        except ConcurrencyConflict as conflict:
            raise AccountAlreadyExists(account_id) from conflict
        return account

    async def get(self, account_id: str, *, fresh: bool = False) -> CreditAccount:
        """The account as its events leave it (``fresh``: read from the store, not memory)."""
        account = await self.repository.get(
            CreditAccount, account_stream_id(account_id), fresh=fresh
        )
        if account is None:
            raise AccountNotFound(account_id)
        return account

    async def get_as_of(self, account_id: str, moment: datetime) -> CreditAccount:
        """The account as its events recorded up to ``moment`` leave it."""
        account = await self.repository.get(
            CreditAccount, account_stream_id(account_id), as_of=moment
        )
        if account is None:
            raise AccountNotFound(account_id)
        return account

    async def exists(self, account_id: str) -> bool:
        """Whether the account has been opened."""
        return await self.repository.exists(account_stream_id(account_id))

    async def spend(self, command: SpendCredits) -> Spent:
        """Spend once per key: a repeat gets the first answer and records nothing."""

        def decide(account: CreditAccount) -> Spent:
            from_allowance, from_topup = account.spend(command.amount, command.reason)
            return Spent(
                account_id=account.account_id,
                amount=command.amount,
                from_allowance=from_allowance,
                from_topup=from_topup,
                reason=command.reason,
                balance=account.balance,
                allowance_remaining=account.allowance_remaining,
                topup_balance=account.topup_balance,
                monthly_allowance=account.monthly_allowance,
                period=account.period,
            )

        return await self.decide_once(
            command.account_id,
            f"spend/{command.account_id}",
            command.idempotency_key,
            request_fingerprint({"amount": command.amount, "reason": command.reason}),
            Spent,
            decide,
        )

    async def decide_once(
        self,
        account_id: str,
        scope: str,
        key: str,
        fingerprint: bytes,
        answer_type: type[A],
        decide: Callable[[CreditAccount], A],
    ) -> A:
        """Run a keyed command on an account once: a repeat gets the first answer.

        ``decide`` changes the account and returns the answer. The decision is
        made on the account as this process last wrote it and is committed with
        the answer under its key by group commit; if another process wrote
        meanwhile, the append conflicts and it is decided again on a fresh load.
        A refusal (InsufficientCredits) is only ever decided on a fresh load, and
        only after the key was found unused: a repeat is never refused.
        """

        async def attempt() -> A:
            account = await self.get(account_id)
            try:
                answer = decide(account)
            except InsufficientCredits:
                earlier = await self.idempotency.find(scope, key)
                if earlier is not None:
                    return replay(earlier, fingerprint, answer_type)
                account = await self.get(account_id, fresh=True)
                answer = decide(account)
            await self.repository.commit(
                account,
                keys=[
                    IdempotencyRecord(
                        scope, key, StoredAnswer(fingerprint, msgspec.json.encode(answer))
                    )
                ],
            )
            return answer

        try:
            async with self.locks.hold(account_id):
                return await retry_on_conflict(attempt)
        except IdempotencyKeyTaken:
            earlier = await self.idempotency.find(scope, key)
            assert earlier is not None  # the key's row committed before ours conflicted
            return replay(earlier, fingerprint, answer_type)

    async def reset_month(self, account_id: str, period: str | None = None) -> CreditAccount:
        """Set the allowance back to the plan for ``period`` (default: this month), once."""
        chosen = period or billing_period(self.clock)

        async def attempt() -> CreditAccount:
            account = await self.get(account_id)
            if account.reset_month(chosen):
                await self.repository.save(account)
            return account

        async with self.locks.hold(account_id):
            return await retry_on_conflict(attempt)

    async def change_allowance(self, account_id: str, monthly_allowance: int) -> CreditAccount:
        """Change the plan's allowance; it takes effect at the next reset."""

        async def attempt() -> CreditAccount:
            account = await self.get(account_id)
            if account.change_allowance(monthly_allowance):
                await self.repository.save(account)
            return account

        async with self.locks.hold(account_id):
            return await retry_on_conflict(attempt)

    async def all_account_ids(self) -> list[str]:
        """Every opened account, oldest first (from their AccountOpened events)."""
        opened = get_topic(CreditAccount.AccountOpened)  # type: ignore[attr-defined]
        return await self.store.creation_field(opened, "account_id")

    async def set_low_balance_threshold(
        self, account_id: str, threshold: int | None
    ) -> CreditAccount:
        """Set below which ``available`` counts as low (None: 10 % of the allowance)."""

        async def attempt() -> CreditAccount:
            account = await self.get(account_id)
            if account.set_low_balance_threshold(threshold):
                await self.repository.save(account)
            return account

        async with self.locks.hold(account_id):
            return await retry_on_conflict(attempt)

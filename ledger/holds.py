"""Holds: reserve credits before work, capture or release after (the write side)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Literal

import msgspec

from ledger.accounts import AccountService
from ledger.domain.account import CreditAccount
from ledger.domain.errors import (
    HoldAlreadySettled,
    HoldHasExpired,
    HoldNotFound,
)
from ledger.domain.holds import OpenHold, Settlement
from ledger.repository import retry_on_conflict
from ledger.store.group_commit import IdempotencyRecord
from ledger.store.idempotency import (
    IdempotencyKeyTaken,
    StoredAnswer,
    request_fingerprint,
)

HoldStatus = Literal["held", "captured", "released", "expired"]


class PlaceHold(msgspec.Struct, frozen=True):
    """Command: reserve ``amount`` credits for ``expires_in_seconds``, once per key."""

    account_id: str
    amount: int
    expires_in_seconds: int
    reason: str
    idempotency_key: str


class Hold(msgspec.Struct, frozen=True):
    """A hold as the API answers it, with the account's balances after the command."""

    hold_id: str
    account_id: str
    status: HoldStatus
    amount: int
    captured: int
    released: int
    reason: str
    expires_at: str
    balance: int
    held: int
    available: int


def _answer(
    account: CreditAccount,
    hold_id: str,
    hold: OpenHold,
    status: HoldStatus,
    settlement: Settlement | None = None,
) -> Hold:
    return Hold(
        hold_id=hold_id,
        account_id=account.account_id,
        status=status,
        amount=hold.amount,
        captured=settlement.captured if settlement else 0,
        released=settlement.released if settlement else 0,
        reason=hold.reason,
        expires_at=hold.expires_at,
        balance=account.balance,
        held=account.held,
        available=account.available,
    )


def new_hold_id() -> str:
    return f"hold_{secrets.token_hex(12)}"


class HoldService:
    """Places and settles holds on credit accounts.

    A settled hold leaves the account's state; its answer stays in the
    idempotency registry under the hold id (scope ``hold-settlement/<account>``),
    written in the same transaction as the settling event. That record is what
    makes capture and release idempotent and tells a late capture whether the
    hold was captured, released or expired.
    """

    def __init__(self, accounts: AccountService) -> None:
        self.accounts = accounts
        self.repository = accounts.repository
        self.idempotency = accounts.idempotency
        self.clock = accounts.clock

    async def place(self, command: PlaceHold) -> Hold:
        """Reserve credits once per key; 402 (InsufficientCredits) when not available."""
        hold_id = new_hold_id()

        def decide(account: CreditAccount) -> Hold:
            expires_at = self.clock() + timedelta(seconds=command.expires_in_seconds)
            hold = account.place_hold(hold_id, command.amount, command.reason, expires_at)
            return _answer(account, hold_id, hold, "held")

        return await self.accounts.decide_once(
            command.account_id,
            f"hold/{command.account_id}",
            command.idempotency_key,
            request_fingerprint(
                {
                    "amount": command.amount,
                    "expires_in_seconds": command.expires_in_seconds,
                    "reason": command.reason,
                }
            ),
            Hold,
            decide,
        )

    async def get(self, account_id: str, hold_id: str) -> Hold:
        """The hold as it stands: open, or the answer that settled it."""
        account = await self.accounts.get(account_id, fresh=True)
        if hold_id in account.open_holds:
            return _answer(account, hold_id, account.hold(hold_id), "held")
        earlier = await self.idempotency.find(f"hold-settlement/{account_id}", hold_id)
        if earlier is None:
            raise HoldNotFound(hold_id)
        return msgspec.json.decode(earlier.response, type=Hold)

    async def capture(self, account_id: str, hold_id: str, amount: int) -> Hold:
        """Spend ``amount`` (at most the held amount) and give the rest back."""
        return await self._settle(account_id, hold_id, "captured", amount)

    async def release(self, account_id: str, hold_id: str) -> Hold:
        """Give all of a hold's credits back."""
        return await self._settle(account_id, hold_id, "released", 0)

    async def expire(self, account_id: str, hold_id: str) -> Hold | None:
        """Record the expiry of a hold that reached it; None if it is settled or not due."""
        account = await self.accounts.get(account_id)
        if hold_id not in account.open_holds or not account.hold(hold_id).has_expired(self.clock()):
            return None
        try:
            return await self._settle(account_id, hold_id, "expired", 0)
        except (HoldNotFound, HoldAlreadySettled, HoldHasExpired):
            return None  # settled meanwhile, by another request or process

    async def _settle(self, account_id: str, hold_id: str, status: HoldStatus, amount: int) -> Hold:
        scope = f"hold-settlement/{account_id}"
        fingerprint = request_fingerprint({"status": status, "amount": amount})

        async def attempt() -> Hold:
            account = await self.accounts.get(account_id)
            if hold_id not in account.open_holds:
                account = await self.accounts.get(account_id, fresh=True)
            if hold_id not in account.open_holds:
                return await self._settled_before(scope, hold_id, fingerprint, status)
            hold = account.hold(hold_id)
            settlement: Settlement | None
            if status == "captured":
                settlement = account.capture_hold(hold_id, amount, self.clock())
            elif status == "released":
                settlement = account.release_hold(hold_id)
            else:
                settlement = account.expire_hold(hold_id, self.clock())
                assert settlement is not None  # expire() asks only once it is due
            answer = _answer(account, hold_id, hold, status, settlement)
            await self.repository.commit(
                account,
                keys=[
                    IdempotencyRecord(
                        scope, hold_id, StoredAnswer(fingerprint, msgspec.json.encode(answer))
                    )
                ],
            )
            return answer

        try:
            async with self.accounts.locks.hold(account_id):
                return await retry_on_conflict(attempt)
        except IdempotencyKeyTaken:
            return await self._settled_before(scope, hold_id, fingerprint, status)

    async def _settled_before(
        self, scope: str, hold_id: str, fingerprint: bytes, status: HoldStatus
    ) -> Hold:
        """The first answer for a repeated request, or why this one comes too late."""
        earlier = await self.idempotency.find(scope, hold_id)
        if earlier is None:
            raise HoldNotFound(hold_id)
        first = msgspec.json.decode(earlier.response, type=Hold)
        if earlier.request_hash == fingerprint:
            return first
        if first.status == "expired":
            if status == "released":
                return first  # its credits already went back: what a release asks
            raise HoldHasExpired(f"The hold {hold_id} expired at {first.expires_at}.")
        raise HoldAlreadySettled(f"The hold {hold_id} was already {first.status}.")

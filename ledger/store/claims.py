"""Claims: what a command records once, under a unique (scope, key), with its first answer.

Idempotency keys of spends, holds and purchases, Stripe event ids and hold
settlements are all claims. A claim is written with the command's events, in
the same commit (``append()`` or ``append_one()``): a command whose claim is taken already has
happened, and its first answer is here to give again.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import msgspec

from ledger.store.read_connections import Pool

T = TypeVar("T")


class StoredAnswer(msgspec.Struct, frozen=True):
    """A recorded answer and the fingerprint of the request that produced it."""

    request_hash: bytes
    response: bytes


class Claim(msgspec.Struct, frozen=True):
    """A unique key a command claims, and the fingerprint of the request claiming it."""

    scope: str
    key: str
    fingerprint: bytes


class ClaimTaken(Exception):
    """Another command recorded this claim first (found when committing)."""


class IdempotencyKeyReused(Exception):
    """The same Idempotency-Key came with a different request."""


KEY_REUSED = "The Idempotency-Key was already used with a different request."


def request_fingerprint(request: dict[str, Any]) -> bytes:
    """What makes two requests under one key "the same": a hash of their fields."""
    return hashlib.sha256(msgspec.json.encode(request, order="sorted")).digest()


def replay(earlier: StoredAnswer, fingerprint: bytes, answer_type: type[T]) -> T:
    """The first answer again, if this request is the one that produced it."""
    if earlier.request_hash != fingerprint:
        raise IdempotencyKeyReused(KEY_REUSED)
    return msgspec.json.decode(earlier.response, type=answer_type)


class Claims:
    """Reads claims (written only by ``append()`` and ``append_one()``, with a command's
    events)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def find(self, scope: str, key: str) -> StoredAnswer | None:
        """The answer recorded under this claim, if any."""
        row = await self.pool.fetchrow(
            "SELECT request_hash, response FROM claims WHERE scope = $1 AND key = $2", scope, key
        )
        return None if row is None else StoredAnswer(row[0], row[1])

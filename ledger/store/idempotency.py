"""The first answer to each idempotent request, keyed by (scope, key)."""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import asyncpg
import msgspec

from ledger.store.event_store import Connection


class StoredAnswer(msgspec.Struct, frozen=True):
    """A recorded answer and the fingerprint of the request that produced it."""

    request_hash: bytes
    response: bytes


T = TypeVar("T")


class IdempotencyKeyReused(Exception):
    """The same Idempotency-Key came with a different request."""


def request_fingerprint(request: dict[str, Any]) -> bytes:
    """What makes two requests under one key "the same": a hash of their fields."""
    return hashlib.sha256(msgspec.json.encode(request, order="sorted")).digest()


def replay(earlier: StoredAnswer, fingerprint: bytes, answer_type: type[T]) -> T:
    """The first answer again, if this request is the one that produced it."""
    if earlier.request_hash != fingerprint:
        raise IdempotencyKeyReused("The Idempotency-Key was already used with a different request.")
    return msgspec.json.decode(earlier.response, type=answer_type)


class IdempotencyKeyTaken(Exception):
    """A concurrent request recorded an answer under the same key first."""


class IdempotencyStore:
    """Reads answers from the pool; records them inside the caller's transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def find(self, scope: str, key: str) -> StoredAnswer | None:
        """The answer recorded under this key, if any."""
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT request_hash, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
                scope,
                key,
            )
        return None if row is None else StoredAnswer(row[0], row[1])

    @staticmethod
    async def record(connection: Connection, scope: str, key: str, answer: StoredAnswer) -> None:
        """Record the answer in the caller's transaction, after its events."""
        try:
            await connection.execute(
                """INSERT INTO idempotency_keys (scope, key, request_hash, response)
                   VALUES ($1, $2, $3, $4)""",
                scope,
                key,
                answer.request_hash,
                answer.response,
            )
        except asyncpg.UniqueViolationError as error:
            raise IdempotencyKeyTaken(f"{scope}/{key}") from error

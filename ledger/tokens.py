"""API tokens: issued once, stored only as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

import asyncpg
import msgspec

TOKEN_PREFIX = "ldg"  # noqa: S105 (a label, not a secret)


class Scope(StrEnum):
    """What a token may do."""

    CREDITS = "credits"
    LEDGER_WRITE = "ledger:write"
    LEDGER_AUDIT = "ledger:audit"


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: a customer bound to one account, or an internal service."""

    token_id: str
    scope: Scope
    account_id: str | None
    name: str | None


class IssuedToken(msgspec.Struct, frozen=True):
    """A new token: ``secret`` is shown once and never stored."""

    token_id: str
    secret: str


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _token_id_of(token: str) -> str | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


class TokenService:
    """Issues, checks and revokes tokens."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def issue(
        self, scope: Scope, *, account_id: str | None = None, name: str | None = None
    ) -> IssuedToken:
        """Create a token; a ``credits`` token is bound to ``account_id``."""
        if (scope is Scope.CREDITS) != (account_id is not None):
            raise ValueError("a credits token needs an account; other scopes take none")
        token_id = secrets.token_hex(8)
        secret = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        async with self.pool.acquire() as connection:
            await connection.execute(
                """INSERT INTO api_tokens (token_id, token_hash, scope, account_id, name)
                   VALUES ($1, $2, $3, $4, $5)""",
                token_id,
                _hash(secret),
                scope.value,
                account_id,
                name,
            )
        return IssuedToken(token_id=token_id, secret=secret)

    async def authenticate(self, token: str) -> Principal | None:
        """The principal for a valid, unrevoked token; None otherwise."""
        token_id = _token_id_of(token)
        if token_id is None:
            return None
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(
                """SELECT token_hash, scope, account_id, name FROM api_tokens
                   WHERE token_id = $1 AND revoked_at IS NULL""",
                token_id,
            )
        if row is None or not hmac.compare_digest(row["token_hash"], _hash(token)):
            return None
        return Principal(
            token_id=token_id,
            scope=Scope(row["scope"]),
            account_id=row["account_id"],
            name=row["name"],
        )

    async def revoke(self, token_id: str) -> bool:
        """Revoke at once; False if no such live token."""
        async with self.pool.acquire() as connection:
            status = await connection.execute(
                """UPDATE api_tokens SET revoked_at = now()
                   WHERE token_id = $1 AND revoked_at IS NULL""",
                token_id,
            )
        return status.endswith(" 1")

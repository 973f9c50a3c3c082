"""API tokens: issued once, stored only as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

import asyncpg
import msgspec

from ledger.store.event_store import DATABASE_ERRORS
from ledger.store.read_connections import Pool

log = logging.getLogger(__name__)

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


class TokenRow(msgspec.Struct, frozen=True):
    """A token as ``ledger tokens list`` shows it: never its secret nor its hash."""

    token_id: str
    scope: str
    account_id: str | None
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class IssuedToken(msgspec.Struct, frozen=True):
    """A new token: ``secret`` is shown once and never stored."""

    token_id: str
    secret: str


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _kept_hash(token: str) -> bytes:
    """What the cache keeps of a token it checked against the table: a BLAKE2s hash of it,
    not the table's SHA-256 one. A token's 64 bytes are one block of BLAKE2s and two of
    SHA-256: ~2.9k instructions against ~7.7k (callgrind), on every request."""
    return hashlib.blake2s(token.encode()).digest()


TOKEN_ID_BYTES = 8
"""A token's id: this many random bytes, in hex (16 digits)."""


def is_token_id(value: str) -> bool:
    """Whether ``value`` has a token id's shape (as ``issue`` makes them)."""
    return len(value) == 2 * TOKEN_ID_BYTES and all(c in "0123456789abcdef" for c in value)


def token_id_of(token: str) -> str | None:
    """The id in a whole token (``ldg_<id>_<secret>``), or None if it is not one."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


V = TypeVar("V")


def _forget_front(memory: OrderedDict[str, V], stale: Callable[[V], bool]) -> None:
    """Drop ``memory``'s entries from the front (the oldest) while they are ``stale``."""
    while memory and stale(next(iter(memory.values()))):
        memory.popitem(last=False)


REVOCATIONS_CHANNEL = "ledger_token_revocations"

USE_RECORDED_EVERY_SECONDS = 60.0
"""``last_used_at`` is written at most this often per token (in each process, and in
the database across processes): a busy token costs one UPDATE a minute."""


USE_LOCK_WAIT = "100ms"
"""How long the write of a token's use waits for a lock before it is given up on."""


class TokenService:
    """Issues, checks and revokes tokens.

    With ``watch_revocations`` running, checked tokens are kept in memory (their
    hashes, never the tokens) and every process drops a revoked one when
    PostgreSQL delivers the revocation's NOTIFY, milliseconds after it commits.
    Without it (or while its connection is lost) every check reads the table;
    a lost connection is opened again in the background, with backoff.

    A listening connection can also die without anyone noticing (a firewall or
    NAT that forgets an idle connection, a pooler in between that does not pass
    notifications on): it looks alive and hears nothing. So no token stays
    cached longer than ``cache_seconds``; after that it is read from the table
    again, and a revocation takes effect everywhere within that time whatever
    happened to the listener.

    Both memories (the cached tokens, and when each token's use was last written) keep
    their entries in the order they were made, and each new entry drops the ones at the
    front whose time is up: they hold the tokens used lately, not every token used since
    the process started (about 450 bytes each, 45 MB per 100,000 customers' tokens).
    """

    RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    CACHE_SECONDS = 30.0

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        reads: Pool | None = None,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.reads: Pool = reads or pool
        """Where a read request's token is looked up, and every use is written (the API's
        reads' share of ``pool``, ledger/store/read_connections.py): a flood of reads with
        tokens not in memory, or with made-up ones, or their lookups stuck behind a lock on
        the table, held the connections the commands need. A command's request looks its
        token up in ``pool``."""
        self.cache_seconds = cache_seconds
        self._clock = clock
        # token id -> (``_kept_hash``, principal, when the entry stops counting; clock's time)
        self._known: OrderedDict[str, tuple[bytes, Principal, float]] = OrderedDict()
        self._listener: asyncpg.Connection | None = None
        # Bumped by every revocation heard, so a check that read a row before a
        # revocation arrived does not then keep the revoked token.
        self._revocations_heard = 0
        self._database_url: str | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        # token id -> when its use was last written (clock's time), oldest first
        self._use_noted: OrderedDict[str, float] = OrderedDict()
        self._use_writes: set[asyncio.Task[None]] = set()

    async def watch_revocations(self, database_url: str) -> None:
        """Start caching checked tokens, dropping each one its revocation names."""
        self._database_url = database_url
        await self._listen(database_url)

    async def _listen(self, database_url: str) -> None:
        listener: asyncpg.Connection = await asyncpg.connect(database_url)
        await listener.add_listener(REVOCATIONS_CHANNEL, self._on_revocation)
        listener.add_termination_listener(self._on_listener_lost)
        self._listener = listener

    async def _reconnect(self) -> None:
        attempt = 0
        while self._database_url is not None and self._listener is None:
            await asyncio.sleep(
                self.RECONNECT_SECONDS[min(attempt, len(self.RECONNECT_SECONDS) - 1)]
            )
            attempt += 1
            try:
                await self._listen(self._database_url)
            except DATABASE_ERRORS as error:
                log.warning("token revocations: cannot listen yet (%s); retrying", error)
            else:
                log.info("token revocations: listening again; tokens are cached again")

    async def stop_watching(self) -> None:
        """Stop caching; close the listening connection."""
        self._database_url = None
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        listener, self._listener = self._listener, None
        self._known.clear()
        if listener is not None:
            await listener.close()
        if self._use_writes:
            await asyncio.wait(self._use_writes, timeout=5)

    def _on_revocation(self, *args: object) -> None:
        self._revocations_heard += 1
        self._known.pop(str(args[-1]), None)

    def _on_listener_lost(self, *_: object) -> None:
        self._listener = None
        self._known.clear()
        if self._database_url is not None and (
            self._reconnecting is None or self._reconnecting.done()
        ):
            log.warning("token revocations: connection lost; checking every token in the table")
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def issue(
        self, scope: Scope, *, account_id: str | None = None, name: str | None = None
    ) -> IssuedToken:
        """Create a token; a ``credits`` token is bound to ``account_id``."""
        if (scope is Scope.CREDITS) != (account_id is not None):
            raise ValueError("a credits token needs an account; other scopes take none")
        token_id = secrets.token_hex(TOKEN_ID_BYTES)
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

    def remembered(self, token: str) -> Principal | None:
        """The principal of a token the cache holds, fresh and matching (its use noted), without
        waiting for anything; None otherwise, and ``authenticate`` says why (the guards ask
        this first: a coroutine fewer a request when it answers)."""
        token_id = token_id_of(token)
        if token_id is None or (known := self._known.get(token_id)) is None:
            return None
        kept_hash, principal, fresh_until = known
        if self._clock() >= fresh_until or not hmac.compare_digest(kept_hash, _kept_hash(token)):
            return None
        self._note_use(token_id)
        return principal

    async def authenticate(self, token: str, *, for_read: bool = False) -> Principal | None:
        """The principal for a valid, unrevoked token; None otherwise (``for_read``: the
        request reads only, and a lookup takes the reads' connections)."""
        if (principal := self.remembered(token)) is not None:
            return principal
        return await self.looked_up(token, for_read=for_read)

    async def looked_up(self, token: str, *, for_read: bool = False) -> Principal | None:
        """``authenticate`` of a token ``remembered`` has just not answered for."""
        token_id = token_id_of(token)
        if token_id is None:
            return None
        if (known := self._known.get(token_id)) is not None:
            if self._clock() < known[2]:  # fresh: the token is not the one its id was given
                return None
            self._known.pop(token_id, None)
        # Kept only if one listener heard everything from before the read to after it: a
        # read begun while none listened may predate a revocation no one heard.
        heard, listening = self._revocations_heard, self._listener
        read_at = self._clock()
        async with (self.reads if for_read else self.pool).acquire() as connection:
            row = await connection.fetchrow(
                """SELECT token_hash, scope, account_id, name FROM api_tokens
                   WHERE token_id = $1 AND revoked_at IS NULL""",
                token_id,
            )
        if row is None or not hmac.compare_digest(row["token_hash"], _hash(token)):
            return None
        principal = Principal(
            token_id=token_id,
            scope=Scope(row["scope"]),
            account_id=row["account_id"],
            name=row["name"],
        )
        if (
            listening is not None
            and self._listener is listening
            and heard == self._revocations_heard
            and self.cache_seconds > 0
        ):
            self._known[token_id] = (_kept_hash(token), principal, read_at + self.cache_seconds)
            _forget_front(self._known, lambda entry: entry[2] <= read_at)
        self._note_use(token_id)
        return principal

    def _note_use(self, token_id: str) -> None:
        """Record the use in the background, at most once a minute per token."""
        now = self._clock()
        noted = self._use_noted
        if now - noted.get(token_id, -USE_RECORDED_EVERY_SECONDS) < USE_RECORDED_EVERY_SECONDS:
            return
        noted[token_id] = now
        noted.move_to_end(token_id)
        _forget_front(noted, lambda at: at <= now - USE_RECORDED_EVERY_SECONDS)
        task = asyncio.get_running_loop().create_task(self._record_use(token_id))
        self._use_writes.add(task)
        task.add_done_callback(self._use_writes.discard)

    async def _record_use(self, token_id: str) -> None:
        # No command needs it: with the reads' connections, and given up on (until the
        # token's next minute) rather than waiting for a lock on api_tokens. Each token's
        # write held a connection of the pool until the lock timeout (5 s) behind one, and
        # the reads of as many tokens in a minute held every connection, the commands' too.
        try:
            async with self.reads.acquire() as connection, connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = '{USE_LOCK_WAIT}'")
                await connection.execute(
                    """UPDATE api_tokens SET last_used_at = now()
                       WHERE token_id = $1
                         AND (last_used_at IS NULL
                              OR last_used_at < now() - make_interval(secs => $2))""",
                    token_id,
                    USE_RECORDED_EVERY_SECONDS,
                )
        except DATABASE_ERRORS as error:
            # Only a report's detail: the request it came with is answered regardless.
            log.debug("could not record the use of token %s: %s", token_id, error)

    async def list_tokens(self, *, include_revoked: bool = False) -> list[TokenRow]:
        """Every token (live ones unless ``include_revoked``), oldest first."""
        rows = await self.pool.fetch(
            """SELECT token_id, scope, account_id, name, created_at, last_used_at, revoked_at
               FROM api_tokens WHERE $1 OR revoked_at IS NULL
               ORDER BY created_at, token_id""",
            include_revoked,
        )
        return [TokenRow(**dict(row)) for row in rows]

    async def revoke(self, token_id: str) -> bool:
        """Revoke at once; False if no such live token."""
        async with self.pool.acquire() as connection, connection.transaction():
            status = await connection.execute(
                """UPDATE api_tokens SET revoked_at = now()
                   WHERE token_id = $1 AND revoked_at IS NULL""",
                token_id,
            )
            revoked = status.endswith(" 1")
            if revoked:  # an id no token has may be anything, even too long for a notification
                await connection.execute("SELECT pg_notify($1, $2)", REVOCATIONS_CHANNEL, token_id)
        self._known.pop(token_id, None)
        return revoked

    async def revoke_named(self, scope: Scope, *, account_id: str | None, name: str) -> list[str]:
        """Revoke every live token of ``scope`` for ``account_id`` called ``name``; their ids."""
        async with self.pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                """UPDATE api_tokens SET revoked_at = now()
                   WHERE scope = $1 AND account_id IS NOT DISTINCT FROM $2 AND name = $3
                     AND revoked_at IS NULL
                   RETURNING token_id""",
                scope.value,
                account_id,
                name,
            )
            revoked = [row["token_id"] for row in rows]
            for token_id in revoked:
                await connection.execute("SELECT pg_notify($1, $2)", REVOCATIONS_CHANNEL, token_id)
        for token_id in revoked:
            self._known.pop(token_id, None)
        return revoked

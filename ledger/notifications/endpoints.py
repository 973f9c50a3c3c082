"""The registry of webhook endpoints: where notifications go and with which secret."""

from __future__ import annotations

import secrets
from datetime import datetime

import asyncpg
import msgspec

from ledger.notifications.addresses import check_url
from ledger.notifications.signing import new_secret
from ledger.notifications.url_form import why_not_taken
from ledger.store.claims import KEY_REUSED, IdempotencyKeyReused, request_fingerprint
from ledger.store.read_connections import Pool
from ledger.unit_of_work import mark_replayed
from ledger.urls import over_tls_or_here


class PlainTextURL(Exception):
    """An ``http://`` endpoint off this machine where notifications must go over TLS."""


class MalformedURL(ValueError):
    """A URL whose form registration refuses (url_form.py): its host is neither a DNS name
    nor an IP address in its usual form, or the rest is not http(s) with a valid port."""


class WebhookEndpoint(msgspec.Struct, frozen=True):
    """A receiver of notifications (its secret is never part of this)."""

    id: str
    url: str
    events: list[str]
    created: datetime
    position: int
    """Its place in the order endpoints were made: the list's cursor."""
    disabled: datetime | None = None


class CreatedEndpoint(msgspec.Struct, frozen=True):
    """A new endpoint with its signing secret: the only time the secret is shown."""

    id: str
    url: str
    events: list[str]
    secret: str
    created: datetime


_COLUMNS = "endpoint_id, url, event_types, created_at, disabled_at, position"
"""What ``_endpoint`` reads of a row."""


def _endpoint(row: asyncpg.Record) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["endpoint_id"],
        url=row["url"],
        events=list(row["event_types"]),
        created=row["created_at"],
        disabled=row["disabled_at"],
        position=row["position"],
    )


class EndpointRegistry:
    """Create, list and disable webhook endpoints.

    The secret is stored as it is: signing a delivery with HMAC needs the key
    itself, so unlike API tokens it cannot be kept only as a hash. It leaves
    the service once, in the answer to ``create``.

    A URL whose host is or resolves to a non-public address is refused unless
    ``allow_private`` (see addresses.py); with ``https_only`` (production), an ``http://``
    one is refused unless its host is this machine: a notification carries an account's
    balance, and its signature does not hide it.
    """

    def __init__(
        self, pool: Pool, *, allow_private: bool = False, https_only: bool = False
    ) -> None:
        self.pool = pool
        self.allow_private = allow_private
        self.https_only = https_only

    async def create(
        self,
        url: str,
        events: list[str],
        *,
        idempotency_key: str | None = None,
        maker: str | None = None,
    ) -> CreatedEndpoint:
        """Register ``url`` for ``events`` with a freshly generated secret.

        With ``idempotency_key``, a repeat of the request answers the endpoint it made (and
        marks it replayed: ``mark_replayed``), however often and even at once; the key with another
        request raises IdempotencyKeyReused. ``maker`` (the caller's token) is part of the
        request: the secret is answered again to whoever made the endpoint, never to another
        caller that sends the same key and body. Raises MalformedURL for a URL of a form the
        HTTP route refuses (``URL_PATTERN``: whoever calls this, the same rule), which the
        dispatcher does not send to either; NonPublicAddress or UnresolvableHost
        (addresses.py) for a URL the dispatcher would not send to, PlainTextURL for one it
        would send to in plain text where only TLS will do (``https_only``).
        """
        fingerprint = request_fingerprint({"url": url, "events": events, "maker": maker})
        if idempotency_key is not None and (
            earlier := await self._made_under(idempotency_key, fingerprint)
        ):
            return earlier
        if (refused := why_not_taken(url)) is not None:
            raise MalformedURL(refused)
        if self.https_only and not over_tls_or_here(url):
            raise PlainTextURL(url)
        if not self.allow_private:
            await check_url(url)
        endpoint_id = "we_" + secrets.token_hex(12)
        secret = new_secret()
        created = await self.pool.fetchval(
            """INSERT INTO webhook_endpoints
                   (endpoint_id, url, event_types, secret, idempotency_key, request_hash)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
               RETURNING created_at""",
            endpoint_id,
            url,
            events,
            secret,
            idempotency_key,
            None if idempotency_key is None else fingerprint,
        )
        if created is None:  # the same key's request made one meanwhile
            assert idempotency_key is not None
            earlier = await self._made_under(idempotency_key, fingerprint)
            assert earlier is not None  # endpoints are never deleted
            return earlier
        return CreatedEndpoint(
            id=endpoint_id, url=url, events=events, secret=secret, created=created
        )

    async def _made_under(self, idempotency_key: str, fingerprint: bytes) -> CreatedEndpoint | None:
        """The endpoint a request under ``idempotency_key`` made, as first answered."""
        row = await self.pool.fetchrow(
            """SELECT endpoint_id, url, event_types, secret, created_at, request_hash
               FROM webhook_endpoints WHERE idempotency_key = $1""",
            idempotency_key,
        )
        if row is None:
            return None
        if row["request_hash"] != fingerprint:
            raise IdempotencyKeyReused(KEY_REUSED)
        mark_replayed()
        return CreatedEndpoint(
            id=row["endpoint_id"],
            url=row["url"],
            events=list(row["event_types"]),
            secret=row["secret"],
            created=row["created_at"],
        )

    async def list(
        self, *, include_disabled: bool = False, after: int | None = None, limit: int | None = None
    ) -> list[WebhookEndpoint]:
        """The endpoints, oldest first (live ones only unless asked), from past ``after``'s
        position, at most ``limit`` of them."""
        rows = await self.pool.fetch(
            f"""SELECT {_COLUMNS} FROM webhook_endpoints
               WHERE ($1 OR disabled_at IS NULL) AND position > $2
               ORDER BY position LIMIT $3""",
            include_disabled,
            after or 0,
            limit,
        )
        return [_endpoint(r) for r in rows]

    async def get(self, endpoint_id: str) -> WebhookEndpoint | None:
        """One endpoint, live or disabled."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = $1",
            endpoint_id,
        )
        return _endpoint(row) if row else None

    async def disable(self, endpoint_id: str) -> WebhookEndpoint | None:
        """Stop delivering to an endpoint; its pending deliveries are cancelled.

        Kept, not deleted, so its deliveries and attempts stay on record.
        None if there is no such endpoint; disabling twice changes nothing.
        """
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"""UPDATE webhook_endpoints
                   SET disabled_at = coalesce(disabled_at, clock_timestamp())
                   WHERE endpoint_id = $1
                   RETURNING {_COLUMNS}""",
                endpoint_id,
            )
            if row is None:
                return None
            await connection.execute(
                """UPDATE webhook_deliveries SET status = 'cancelled',
                          last_error = coalesce(last_error, 'endpoint disabled')
                   WHERE endpoint_id = $1 AND status = 'pending'""",
                endpoint_id,
            )
        return _endpoint(row)

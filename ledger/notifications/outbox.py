"""The outbox of deliveries: claiming what is due, recording attempts, listing, retrying.

A delivery is claimed with a lease rather than by holding its row lock while
the HTTP request runs: a transaction kept open for up to the request's
timeout would hold back the event store's read watermark (it has a
transaction id once it locks a row), and with it every projection. The claim
takes the rows with ``FOR UPDATE SKIP LOCKED`` in a short transaction, moves
their ``next_attempt_at`` past the lease and commits; a dispatcher that dies
mid-request leaves the delivery to be claimed again when the lease runs out.
Deliveries are therefore at least once; receivers dedupe by the notification id.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg
import msgspec

from ledger.notifications import DELIVERIES_CHANNEL

DEFAULT_SCHEDULE: tuple[float, ...] = (60, 300, 1800, 7200, 18000, 36000, 43200)
"""Seconds to wait after each failed attempt: 1 min, 5 min, 30 min, 2 h, 5 h, 10 h, 12 h.

Eight attempts over about 29.6 hours (at least 26.6 with the jitter) before
a delivery counts as failed.
"""
JITTER = 0.1
"""Each wait is stretched or shrunk by up to this share, so receivers that came
back are not hit by every delayed delivery at the same second."""
LEASE_SECONDS = 60.0
"""How long a claimed delivery is left to its dispatcher (well above the request timeout)."""


class DueDelivery(msgspec.Struct, frozen=True):
    """A claimed delivery with what is needed to send it."""

    delivery_id: int
    attempt: int
    notification_id: str
    endpoint_id: str
    url: str
    secret: str
    payload: str


class Attempt(msgspec.Struct, frozen=True):
    """One try at a delivery."""

    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None


class Delivery(msgspec.Struct, frozen=True):
    """A notification to one endpoint and how its delivery went."""

    delivery_id: int
    notification_id: str
    event_type: str
    endpoint_id: str
    url: str
    account_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    last_error: str | None
    history: list[Attempt] = []


def backoff(step: int, schedule: Sequence[float]) -> float | None:
    """Seconds until the next attempt after ``step`` earlier waits; None when none is left."""
    if step >= len(schedule):
        return None
    return schedule[step] * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311


async def claim_due(
    pool: asyncpg.Pool,
    limit: int,
    lease_seconds: float = LEASE_SECONDS,
    *,
    per_endpoint: int | None = None,
    sending: Mapping[str, int] | None = None,
) -> list[DueDelivery]:
    """Claim up to ``limit`` due deliveries to live endpoints, oldest first.

    With ``per_endpoint``, no more of an endpoint's than bring the requests the caller has
    in flight to it (``sending``, endpoint id → requests) up to that many: a receiver that
    hangs holds that many of a dispatcher's requests, not all of them. The deliveries of an
    endpoint already there are passed over, so the limit goes to the others' oldest.

    A due delivery of a disabled endpoint is cancelled instead, as disabling it cancels
    the pending ones: the projector may commit one just after (it read the endpoint as
    live before the disable), and nothing else would ever end it.
    """
    sending = sending or {}
    rows = await pool.fetch(
        """WITH sending AS (
               SELECT * FROM unnest($4::text[], $5::int[]) AS s(endpoint_id, requests)),
           due AS (
               SELECT d.delivery_id, e.disabled_at IS NOT NULL AS disabled
               FROM webhook_endpoints e LEFT JOIN sending s USING (endpoint_id)
               CROSS JOIN LATERAL (
                   SELECT d.delivery_id, d.next_attempt_at FROM webhook_deliveries d
                   WHERE d.endpoint_id = e.endpoint_id AND d.status = 'pending'
                     AND d.next_attempt_at <= (SELECT clock_timestamp())
                   ORDER BY d.next_attempt_at, d.delivery_id
                   LIMIT CASE WHEN $3::int IS NULL OR e.disabled_at IS NOT NULL THEN $1
                              ELSE greatest($3 - coalesce(s.requests, 0), 0) END
                   FOR UPDATE SKIP LOCKED) d
               ORDER BY d.next_attempt_at, d.delivery_id
               LIMIT $1),
           cancelled AS (
               UPDATE webhook_deliveries d
               SET status = 'cancelled', last_error = coalesce(d.last_error, 'endpoint disabled')
               FROM due WHERE d.delivery_id = due.delivery_id AND due.disabled)
           UPDATE webhook_deliveries d
           SET attempts = d.attempts + 1,
               next_attempt_at = clock_timestamp() + make_interval(secs => $2)
           FROM due, webhook_endpoints e
           WHERE d.delivery_id = due.delivery_id AND NOT due.disabled
             AND e.endpoint_id = d.endpoint_id
           RETURNING d.delivery_id, d.attempts, d.notification_id, d.endpoint_id,
                     e.url, e.secret, d.payload""",
        limit,
        lease_seconds,
        per_endpoint,
        list(sending),
        list(sending.values()),
    )
    return [DueDelivery(*r) for r in rows]


async def seconds_until_due(pool: asyncpg.Pool) -> float | None:
    """How long until the next pending delivery is due (0 if one is); None if none waits."""
    value = await pool.fetchval(
        """SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())
           FROM webhook_deliveries WHERE status = 'pending'
             AND endpoint_id IN (SELECT endpoint_id FROM webhook_endpoints
                                 WHERE disabled_at IS NULL)"""
    )
    return None if value is None else max(float(value), 0.0)


async def record_attempt(
    pool: asyncpg.Pool,
    due: DueDelivery,
    *,
    started_at: datetime,
    duration_ms: int,
    status_code: int | None,
    error: str | None,
    schedule: Sequence[float],
) -> str:
    """Record one attempt and decide what follows; return the delivery's status after it.

    Only the claim this attempt belongs to moves the delivery on: if the lease
    ran out and another dispatcher claimed it meanwhile (or an operator asked
    for a retry), the attempt is recorded and the newer claim decides.
    """
    delivered = status_code is not None and 200 <= status_code < 300
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            """INSERT INTO webhook_attempts
                   (delivery_id, attempt, started_at, duration_ms, status_code, error)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
            due.delivery_id,
            due.attempt,
            started_at,
            duration_ms,
            status_code,
            error,
        )
        row = await connection.fetchrow(
            """SELECT status, schedule_step FROM webhook_deliveries
               WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending' FOR UPDATE""",
            due.delivery_id,
            due.attempt,
        )
        if row is None:
            return "superseded"
        if delivered:
            await connection.execute(
                """UPDATE webhook_deliveries SET status = 'delivered',
                          delivered_at = clock_timestamp(), last_error = NULL
                   WHERE delivery_id = $1""",
                due.delivery_id,
            )
            return "delivered"
        wait = backoff(row["schedule_step"], schedule)
        if wait is None:
            await connection.execute(
                """UPDATE webhook_deliveries SET status = 'failed', last_error = $2
                   WHERE delivery_id = $1""",
                due.delivery_id,
                error,
            )
            return "failed"
        await connection.execute(
            """UPDATE webhook_deliveries
               SET schedule_step = schedule_step + 1, last_error = $2,
                   next_attempt_at = clock_timestamp() + make_interval(secs => $3)
               WHERE delivery_id = $1""",
            due.delivery_id,
            error,
            wait,
        )
        return "pending"


class NotRetryable(Exception):
    """The delivery does not exist, was delivered, is being sent, or its endpoint is
    disabled."""


async def retry_now(pool: asyncpg.Pool, delivery_id: int) -> Delivery:
    """Make a pending or failed delivery due at once.

    A failed delivery gets one more attempt (it is failed again if that one
    fails too); a pending one keeps its place in the backoff schedule. One being sent
    (claimed, its lease running and its attempt not recorded yet) is refused: made due,
    it would be claimed and sent again while the first request is under way. The refusal
    says when the lease ends and how long that is from now: a dispatcher that died
    mid-request leaves it so until then, when any running dispatcher sends it again.
    """
    async with pool.acquire() as connection, connection.transaction():
        # The row lock keeps a dispatcher from claiming it meanwhile (SKIP LOCKED); an
        # attempt is recorded with the lock on it too (``record_attempt``).
        row = await connection.fetchrow(
            """SELECT d.status, e.disabled_at, d.attempts, d.next_attempt_at,
                      ceil(extract(epoch FROM d.next_attempt_at - clock_timestamp()))::int
                          AS lease_left,
                      d.status = 'pending' AND d.attempts > 0
                          AND d.next_attempt_at > clock_timestamp()
                          AND NOT EXISTS (SELECT FROM webhook_attempts a
                                          WHERE a.delivery_id = d.delivery_id
                                            AND a.attempt = d.attempts) AS sending
               FROM webhook_deliveries d JOIN webhook_endpoints e USING (endpoint_id)
               WHERE d.delivery_id = $1 FOR UPDATE OF d""",
            delivery_id,
        )
        if row is None:
            raise NotRetryable(f"no delivery dlv_{delivery_id}")
        if row["status"] == "delivered":
            raise NotRetryable(f"dlv_{delivery_id} was delivered already")
        if row["disabled_at"] is not None:
            raise NotRetryable(f"dlv_{delivery_id}'s endpoint is disabled")
        if row["sending"]:
            # Its dispatcher may have died mid-request: nothing here can tell. Say when the
            # lease ends (the database's clock, as the claim's) and what happens then, so
            # that nobody retries in a loop or waits for a retry that is not needed.
            raise NotRetryable(
                f"dlv_{delivery_id} is being sent now (attempt {row['attempts']}): not sent "
                "twice; should that attempt fail, retry it then (its lease runs out at "
                f"{row['next_attempt_at']:%H:%M:%SZ}, in {row['lease_left']} s, should its "
                "dispatcher have stopped: a dispatcher running then sends it again by itself, "
                "and this command takes it from then on)"
            )
        await connection.execute(
            """UPDATE webhook_deliveries SET status = 'pending',
                      next_attempt_at = clock_timestamp()
               WHERE delivery_id = $1""",
            delivery_id,
        )
        await connection.execute("SELECT pg_notify($1, '')", DELIVERIES_CHANNEL)
    found = await list_deliveries(pool, delivery_id=delivery_id)
    return found[0]


async def list_deliveries(
    pool: asyncpg.Pool,
    *,
    status: str | None = None,
    endpoint_id: str | None = None,
    delivery_id: int | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Deliveries, newest first, each with its attempts (oldest first)."""
    rows = await pool.fetch(
        """SELECT d.delivery_id, d.notification_id, d.event_type, d.endpoint_id, e.url,
                  d.account_id, d.status, d.attempts,
                  CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
                  d.created_at, d.delivered_at, d.last_error
           FROM webhook_deliveries d JOIN webhook_endpoints e USING (endpoint_id)
           WHERE ($1::text IS NULL OR d.status = $1)
             AND ($2::text IS NULL OR d.endpoint_id = $2)
             AND ($3::bigint IS NULL OR d.delivery_id = $3)
           ORDER BY d.delivery_id DESC LIMIT $4""",
        status,
        endpoint_id,
        delivery_id,
        limit,
    )
    attempts: dict[int, list[Attempt]] = {}
    for a in await pool.fetch(
        """SELECT delivery_id, attempt, started_at, duration_ms, status_code, error
           FROM webhook_attempts WHERE delivery_id = any($1) ORDER BY delivery_id, attempt""",
        [r["delivery_id"] for r in rows],
    ):
        attempts.setdefault(a["delivery_id"], []).append(
            Attempt(
                attempt=a["attempt"],
                started_at=a["started_at"],
                duration_ms=a["duration_ms"],
                status_code=a["status_code"],
                error=a["error"],
            )
        )
    return [Delivery(**dict(r), history=attempts.get(r["delivery_id"], [])) for r in rows]

"""Health checks and metrics for operators."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from api.metrics import GroupCommitUse, ViewLag, exposition, webhook_outcomes
from api.openapi import errors
from api.services import ServicesDependency

READY_TIMEOUT_SECONDS = 2.0


@get(
    "/healthz",
    media_type=MediaType.JSON,
    tags=["operations"],
)
async def healthz() -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok"}


@get(
    "/readyz",
    media_type=MediaType.JSON,
    tags=["operations"],
    responses={
        503: ResponseSpec(
            dict[str, str],
            description="The database does not answer.",
            generate_examples=False,
            examples=[Example(summary="not ready", value={"status": "unavailable"})],
        )
    },
)
async def readyz(services: ServicesDependency) -> Response[dict[str, str]]:
    """200 when the database answers, 503 otherwise."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with services.pool.acquire() as connection:
                await connection.fetchval("SELECT 1")
    except Exception:  # any failure to answer means not ready
        return Response({"status": "unavailable"}, status_code=503)
    return Response({"status": "ready"}, status_code=200)


_VIEW_LAG = """
    SELECT p.name, p.position,
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT e.recorded_at FROM stored_events e
               WHERE e.notification_id > p.position
               ORDER BY e.notification_id LIMIT 1)), 0)::float8 AS lag_seconds
    FROM projection_positions p"""


@get(
    "/metrics",
    media_type="text/plain; version=0.0.4",
    tags=["operations"],
    responses=errors(503),
)
async def metrics(request: Request[Any, Any, Any], services: ServicesDependency) -> str:
    """Prometheus text format (metrics listed in docs/operations-metrics.md)."""
    async with services.pool.acquire() as connection:
        rows = await connection.fetch(_VIEW_LAG)
        head = int(
            await connection.fetchval("SELECT coalesce(max(notification_id), 0) FROM stored_events")
        )
    committer = services.ledger.uow.committer
    return exposition(
        request.app.state.request_counter,
        head=head,
        views={
            r["name"]: ViewLag(
                position=r["position"],
                lag_events=max(head - r["position"], 0),
                lag_seconds=max(r["lag_seconds"], 0.0),
            )
            for r in rows
        },
        pool=services.pool,
        group_commit=GroupCommitUse(batches=committer.batches, commands=committer.commands),
        webhooks=webhook_outcomes,
    )


ROUTES = [healthz, readyz, metrics]

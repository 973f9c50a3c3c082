"""Health checks and metrics for operators."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import MediaType, Request, Response, get

from api.metrics import exposition
from api.services import ServicesDependency

READY_TIMEOUT_SECONDS = 2.0


@get("/healthz", media_type=MediaType.JSON, tags=["operations"])
async def healthz() -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok"}


@get("/readyz", media_type=MediaType.JSON, tags=["operations"])
async def readyz(services: ServicesDependency) -> Response[dict[str, str]]:
    """200 when the database answers, 503 otherwise."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with services.pool.acquire() as connection:
                await connection.fetchval("SELECT 1")
    except Exception:  # any failure to answer means not ready
        return Response({"status": "unavailable"}, status_code=503)
    return Response({"status": "ready"}, status_code=200)


@get("/metrics", media_type="text/plain; version=0.0.4", tags=["operations"])
async def metrics(request: Request[Any, Any, Any], services: ServicesDependency) -> str:
    """Prometheus text format."""
    rows = await services.pool.fetch("SELECT name, position FROM projection_positions")
    head = await services.store.head_position()
    return exposition(
        request.app.state.request_counter,
        head,
        {r["name"]: r["position"] for r in rows},
        {"ledger_db_pool_size": services.pool.get_size()},
    )


ROUTES = [healthz, readyz, metrics]

"""Health checks for orchestrators."""

from __future__ import annotations

import asyncio

from litestar import MediaType, Response, get

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


ROUTES = [healthz, readyz]

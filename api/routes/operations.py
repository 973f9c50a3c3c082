"""Health checks and metrics for operators."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from api.access.guards import Unauthenticated, bearer_token
from api.dependencies import ServicesDependency
from api.metrics import (
    CONTENT_TYPE,
    METRICS_PATH,
    MetricsAccess,
    exposition,
    refresh_gauges,
    set_clock_gauges,
)
from api.openapi import errors

READY_TIMEOUT_SECONDS = 2.0

DOCS_PATH = "/schema"
OPENAPI_PATH = "/schema/openapi.json"


class ServiceIndex(msgspec.Struct, frozen=True):
    """Where the API is described: the documentation page and the OpenAPI document."""

    service: str
    docs: str
    openapi: str


@get(
    "/",
    media_type=MediaType.JSON,
    tags=["operations"],
    response_headers=[
        ResponseHeader(
            name="Link",
            value=f'<{OPENAPI_PATH}>; rel="service-desc", <{DOCS_PATH}>; rel="service-doc"',
            description="RFC 8631 links to the OpenAPI document and the documentation page.",
        )
    ],
)
async def index() -> ServiceIndex:
    """Where to read about this API: ``docs`` (a page) and ``openapi`` (the document)."""
    return ServiceIndex(service="credit-ledger", docs=DOCS_PATH, openapi=OPENAPI_PATH)


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
            description="The database does not answer, or this host's clock is too far from "
            "the database's (LEDGER_MAX_CLOCK_SKEW_SECONDS): it takes no commands.",
            generate_examples=False,
            examples=[Example(summary="not ready", value={"status": "unavailable"})],
        )
    },
)
async def readyz(services: ServicesDependency) -> Response[dict[str, str]]:
    """200 when the database answers and this host's clock is within
    ``LEDGER_MAX_CLOCK_SKEW_SECONDS`` of the database's (as last measured: otherwise its
    commands are refused, ledger/clock_guard.py), 503 otherwise."""
    if services.ledger.clock_guard.skewed:
        return Response({"status": "unavailable", "reason": "clock"}, status_code=503)
    if await _database_answers(services):
        return Response({"status": "ready"}, status_code=200)
    return Response({"status": "unavailable"}, status_code=503)


async def _database_answers(services: ServicesDependency) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with services.pool.acquire() as connection:
                await connection.fetchval("SELECT 1")
    except Exception:  # any failure to answer means not ready
        return False
    return True


@get(
    METRICS_PATH,
    media_type=CONTENT_TYPE,
    tags=["operations"],
    responses=errors(401, 404, 503, not_found="Not served on this port: METRICS_PORT serves it."),
)
async def metrics(request: Request[Any, Any, Any], services: ServicesDependency) -> Response[bytes]:
    """Prometheus text format (metrics listed in docs/operations-metrics.md).

    With ``METRICS_PORT`` set it answers only on that port (404 on the API's); with
    ``METRICS_TOKEN`` set it needs ``Authorization: Bearer <METRICS_TOKEN>`` (401).
    """
    access: MetricsAccess = request.app.state.metrics_access
    # On the API's port with a metrics port: 404 from metrics_port_only, before this.
    if not access.may_read(request, bearer_token(request)):
        raise Unauthenticated
    await refresh_gauges(services.pool, services.read_pool)
    set_clock_gauges(services.ledger.clock_guard)
    return Response(exposition(), media_type=CONTENT_TYPE)


ROUTES = [index, healthz, readyz, metrics]

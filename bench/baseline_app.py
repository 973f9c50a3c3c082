"""The baselines the HTTP benchmarks compare the service with: bare Litestar apps.

* ``POST /insert``: reads the body, then one ``INSERT`` and ``COMMIT`` on a pooled
  asyncpg connection (the same pool size as the service's ``create_pool``), answers a
  small JSON object. What one durable write per request costs through this stack.
* ``GET /hello``: a JSON answer that touches no database.

Each runs on the best server stack at hand, as a team would deploy it, in a process of
its own, without an access log:

* uvicorn with uvloop and httptools (what ``uvicorn[standard]`` installs), asked for by
  name so that a missing one fails instead of falling back to asyncio and h11::

    DATABASE_URL=postgresql://... PORT=8001 python -m bench.baseline_app

* granian, the second baseline (``bench.service.baseline_app(..., stack="granian")``)::

    DATABASE_URL=postgresql://... granian --interface asgi --loop uvloop --port 8001 \
        --factory bench.baseline_app:app_from_env
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import uuid4

import asyncpg
from litestar import Litestar, Request, get, post

POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 20
"""The service's pool (``api.database.create_pool``'s defaults)."""

TABLE = "bench_baseline_inserts"

_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id uuid PRIMARY KEY,
    body bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""

_INSERT = f"INSERT INTO {TABLE} (id, body) VALUES ($1, $2)"


@post("/insert", status_code=200)
async def insert(request: Request) -> dict[str, bool]:
    """One durable row per request: BEGIN, INSERT, COMMIT."""
    body = await request.body()
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(_INSERT, uuid4(), body)
    return {"ok": True}


@get("/hello")
async def hello() -> dict[str, str]:
    """No database at all: what Litestar and uvicorn cost per request."""
    return {"hello": "world"}


def create_app(database_url: str | None = None) -> Litestar:
    """The baseline app; without a database URL only ``/hello`` works."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if database_url is None:
            yield
            return
        pool = await asyncpg.create_pool(
            database_url, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE
        )
        try:
            async with pool.acquire() as connection:
                await connection.execute(_DDL)
            app.state.pool = pool
            yield
        finally:
            await pool.close()

    return Litestar(
        route_handlers=[insert, hello], lifespan=[lifespan], debug=False, logging_config=None
    )


def app_from_env() -> Litestar:
    """The app for ``DATABASE_URL`` (granian's ``--factory`` target)."""
    return create_app(os.environ.get("DATABASE_URL"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.baseline_app",
        description="Serve the bare baseline endpoints (POST /insert, GET /hello) with uvicorn,"
        " uvloop and httptools on 127.0.0.1:$PORT; the database is $DATABASE_URL.",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8001")))
    parser.add_argument(
        "--reads-per-turn",
        action="store_true",
        help="uvicorn's protocol as `ledger serve` runs it: answers to reads sent at the end"
        " of the loop's turn (api/http_writes.py)",
    )
    args = parser.parse_args(argv)
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        print("DATABASE_URL is not set: only GET /hello will work", file=sys.stderr)
    import uvicorn

    from api.http_writes import ReadsAnsweredPerTurn

    uvicorn.run(
        create_app(database_url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=ReadsAnsweredPerTurn if args.reads_per_turn else "httptools",
    )


if __name__ == "__main__":
    main()

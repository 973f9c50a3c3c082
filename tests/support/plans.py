"""How many table rows a query reads, from PostgreSQL's own EXPLAIN ANALYZE."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def rows_read(connection: asyncpg.Connection | asyncpg.Pool, query: str, *args: Any) -> int:
    """The rows every scan of a table in the query's plan returned, over all its loops.

    PostgreSQL 15 reports a node's rows as a whole-number average per loop: ask about one
    key at a time where a node would run several times.
    """
    [plan] = json.loads(await connection.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args))
    return _rows_read(plan["Plan"])


def _rows_read(node: dict[str, Any]) -> int:
    own = node["Actual Rows"] * node["Actual Loops"] if "Relation Name" in node else 0
    return int(own) + sum(_rows_read(child) for child in node.get("Plans", []))

"""What a query's plan reads, from PostgreSQL's own EXPLAIN: table rows, indexes searched."""

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


async def indexes_searched(connection: asyncpg.Connection, query: str, *args: Any) -> set[str]:
    """The indexes the query's plan looks keys up in (an ``Index Cond``; not those it only
    walks from end to end)."""
    [plan] = json.loads(await connection.fetchval("EXPLAIN (FORMAT JSON) " + query, *args))
    return _searched(plan["Plan"])


def _searched(node: dict[str, Any]) -> set[str]:
    own = {node["Index Name"]} if "Index Cond" in node else set()
    return own.union(*(_searched(child) for child in node.get("Plans", [])))


def _rows_read(node: dict[str, Any]) -> int:
    own = node["Actual Rows"] * node["Actual Loops"] if "Relation Name" in node else 0
    return int(own) + sum(_rows_read(child) for child in node.get("Plans", []))


_NESTED_PLANS = """LOAD 'auto_explain';
SET LOCAL auto_explain.log_min_duration = 0;
SET LOCAL auto_explain.log_analyze = on;
SET LOCAL auto_explain.log_nested_statements = on;
SET LOCAL auto_explain.log_format = json;
SET LOCAL client_min_messages = log"""


async def rows_read_inside(database_url: str, query: str, *args: Any) -> int:
    """``rows_read`` of the statements a query's functions run, as well as its own.

    EXPLAIN shows a function's call, not its statements: PostgreSQL's ``auto_explain``
    logs the plan of each (nested ones too), sent to this connection as messages. Only a
    superuser may load it: ``database_url`` connects as the tests' server's own.
    """
    plans: list[dict[str, Any]] = []

    def keep(_: object, message: asyncpg.PostgresLogMessage) -> None:
        _, _, text = message.message.partition("plan:\n")
        if text:
            plans.append(json.loads(text)["Plan"])

    connection = await asyncpg.connect(database_url)
    await connection.fetch(query, *args)  # asyncpg's look-up of the types, not logged below
    connection.add_log_listener(keep)
    try:
        async with connection.transaction():
            await connection.execute(_NESTED_PLANS)
            await connection.fetch(query, *args)
    finally:
        await connection.close()
    if len(plans) < 2:
        raise AssertionError(f"auto_explain logged {len(plans)} plans: no nested statement")
    return sum(_rows_read(plan) for plan in plans)

"""A database whose text is not kept in UTF8 is refused before anything is set up or read."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from api.database import DatabaseNotUtf8, create_pool, describe
from tests.conftest import _with_database
from tests.support.cli import ledger


@pytest.fixture(params=["SQL_ASCII", "LATIN1"])
async def database_not_in_utf8(
    request: pytest.FixtureRequest, postgres_server_url: str
) -> AsyncIterator[tuple[str, str, str]]:
    """A fresh database in ``request.param`` (its name upper-case in part, as SQL must quote
    it); its URL, name and encoding."""
    encoding = request.param
    name = f"ledger_test_Enc_{os.urandom(4).hex()}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        # Locale C takes any encoding; template0, as template1 is in the server's (UTF8).
        await admin.execute(
            f"CREATE DATABASE \"{name}\" ENCODING '{encoding}' TEMPLATE template0 "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
        yield _with_database(postgres_server_url, name), name, encoding
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_database_not_in_utf8_is_refused_in_one_line_naming_its_encoding(
    database_not_in_utf8: tuple[str, str, str],
) -> None:
    """In SQL_ASCII PostgreSQL counts text in bytes: `ledger audit verify` found every
    statement line with an "é" in its reason unlike the replay's. It was set up and served."""
    url, name, encoding = database_not_in_utf8

    set_up = await ledger(url, "db", "setup")
    listed = await ledger(url, "accounts", "list")
    audited = await ledger(url, "audit", "verify")
    with pytest.raises(DatabaseNotUtf8) as refused:
        await create_pool(url)  # what `ledger serve`'s start-up opens (api/app.py)
    inside = await asyncpg.connect(url)
    try:
        tables = await inside.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await inside.close()

    fix = f"create one in UTF8 (CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0)"
    assert str(refused.value).startswith(f"{describe(url)} is in {encoding}, not UTF8: ")
    assert f"{fix} and point DATABASE_URL at it" in str(refused.value)
    for run, code in ((set_up, 1), (listed, 1), (audited, 2)):  # audit's 1 is a finding
        assert run.returncode == code, run.stderr
        [line] = run.stderr.splitlines()
        assert line == f"Error: {refused.value}"
    assert tables == 0  # nothing was set up

"""What a first start-up logs of its migrations: a line each, then their sum once."""

from __future__ import annotations

import logging

import pytest

from api.database import service_url
from ledger.store.migrate import available_migrations
from tests.conftest import fresh_database


async def test_a_first_start_up_names_each_migration_once(
    postgres_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    names = [name for _, name, _ in available_migrations()]
    async with fresh_database(postgres_server_url) as url:
        with caplog.at_level(logging.INFO):
            await service_url(url)

    lines = [record.getMessage() for record in caplog.records]
    summary = f"database schema migrated: {len(names)} migrations applied, up to {names[-1]}"
    assert summary in lines
    # Not the whole list again after a line each (a 700-character line on the first screen).
    for name in names:
        assert [line for line in lines if name in line and line != summary] == [
            f"applied migration {name}"
        ]

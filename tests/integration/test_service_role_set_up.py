"""Set-up leaves ledger_service a login that owns nothing, or refuses (a security review).

A role or a database made before set-up keeps what it was given: a database made
``OWNER ledger_service`` let the service drop it, history and all, and create the schemas
and temporary tables set-up had revoked. Roles are the server's: a test that changes
ledger_service does it in a transaction it rolls back, so no other database sees it.
"""

from __future__ import annotations

import asyncpg
import pytest

from api.database import as_role
from ledger.store.migrate import SERVICE_ROLE, ServiceRoleTooPowerful, set_up
from tests.conftest import fresh_database


async def _migrations_table(connection: asyncpg.Connection) -> bool:
    return bool(await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"))


async def test_set_up_refuses_a_database_the_service_role_owns(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
) -> None:
    async with fresh_database(postgres_server_url) as url:
        admin = await asyncpg.connect(url)
        try:
            database = await admin.fetchval("SELECT current_database()")
            await admin.execute(f'ALTER DATABASE "{database}" OWNER TO {SERVICE_ROLE}')
            with pytest.raises(ServiceRoleTooPowerful, match=f'owns the database "{database}"'):
                await set_up(admin)
            assert not await _migrations_table(admin)  # refused before anything was made
            await admin.execute(f'ALTER DATABASE "{database}" OWNER TO current_user')
        finally:
            await admin.close()


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (f"ALTER ROLE {SERVICE_ROLE} CREATEROLE", "may create roles"),
        (f"ALTER ROLE {SERVICE_ROLE} CREATEDB", "may create databases"),
        (f"GRANT ledger_owner TO {SERVICE_ROLE}", "is a member of ledger_owner"),
    ],
)
async def test_set_up_refuses_a_service_role_that_is_more_than_a_login(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
    given: str,
    said: str,
) -> None:
    async with fresh_database(postgres_server_url) as url:
        admin = await asyncpg.connect(url)
        granted = admin.transaction()
        await granted.start()
        try:
            await admin.execute(given)
            with pytest.raises(ServiceRoleTooPowerful, match=said):
                await set_up(admin)
            assert not await _migrations_table(admin)
        finally:
            await granted.rollback()
            await admin.close()


async def test_set_up_takes_back_create_on_the_database_and_its_public_schema(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
) -> None:
    """A schema of the service's own named after a role comes first in that role's
    search_path; public's CREATE was revoked from PUBLIC only."""
    async with fresh_database(postgres_server_url) as url:
        admin = await asyncpg.connect(url)
        try:
            await set_up(admin)
            database = await admin.fetchval("SELECT current_database()")
            await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO {SERVICE_ROLE}')
            await admin.execute(f"GRANT CREATE ON SCHEMA public TO {SERVICE_ROLE}")
            await set_up(admin)
        finally:
            await admin.close()
        service = await asyncpg.connect(as_role(url, SERVICE_ROLE))
        try:
            for statement in ("CREATE SCHEMA ledger_owner", "CREATE TABLE public.shadow (n int)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await service.execute(statement)
        finally:
            await service.close()

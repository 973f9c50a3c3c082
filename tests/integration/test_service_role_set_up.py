"""Set-up leaves ledger_service a login that owns nothing, or refuses (a security review).

A role or a database made before set-up keeps what it was given: a database made
``OWNER ledger_service`` let the service drop it, history and all, and create the schemas
and temporary tables set-up had revoked. Roles are the server's: a test that changes
ledger_service does it in a transaction it rolls back, so no other database sees it.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from eventsourcing.persistence import StoredEvent

from api.database import as_role
from ledger.store.migrate import (
    PROJECTOR_ROLE,
    RELAY_ROLE,
    SERVICE_ROLE,
    ServiceRoleTooPowerful,
    set_up,
)
from tests.conftest import IsolatedDatabase, fresh_database


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


async def test_the_relay_role_reads_history_and_moves_only_its_own_position(
    isolated_db: IsolatedDatabase,
) -> None:
    """``ledger relay`` connects as ledger_relay: it reads the store and moves its own
    position. It may not append, write a view, a token or a delivery, nor move a view's
    position (the projector would skip events), also not through its own functions."""
    [position] = await isolated_db.store.append(
        [StoredEvent(uuid.uuid4(), 1, "tests.relay:CreditsSpent", b'{"amount": 1}')]
    )
    relay = await asyncpg.connect(as_role(isolated_db.url, RELAY_ROLE))
    try:
        assert await relay.fetchval("SELECT max(notification_id) FROM stored_events") == position
        assert await relay.fetchval("SELECT start_relay_position('relay:nats')") == 0
        await relay.execute("SELECT move_relay_position('relay:nats', $1)", position)
        assert (
            await relay.fetchval(
                "SELECT position FROM projection_positions WHERE name = 'relay:nats'"
            )
            == position
        )
        for statement in (
            "INSERT INTO stored_events SELECT * FROM stored_events LIMIT 0",
            "UPDATE stored_events SET topic = topic",
            "DELETE FROM stored_events",
            "TRUNCATE stored_events",
            "SELECT append(0, '{}', '{}')",
            "SELECT append_one(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            "INSERT INTO projection_positions (name) VALUES ('relay:other')",
            "UPDATE projection_positions SET position = 0",
            "DELETE FROM projection_positions",
            "SELECT move_relay_position('balances', 1000000)",
            "SELECT start_relay_position('balances')",
            "INSERT INTO balances SELECT * FROM balances LIMIT 0",
            "SELECT count(*) FROM api_tokens",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await relay.execute(statement)
    finally:
        await relay.close()
    admin = await asyncpg.connect(isolated_db.url)
    try:
        writes = await admin.fetch(
            """SELECT c.relname FROM pg_class c
               WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'S')
                 AND (has_table_privilege($1, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                      OR c.relkind = 'S' AND has_sequence_privilege($1, c.oid, 'USAGE, UPDATE'))""",
            RELAY_ROLE,
        )
        runs_as_owner = await admin.fetch(
            """SELECT proname FROM pg_proc
               WHERE pronamespace = 'public'::regnamespace AND prosecdef
                 AND has_function_privilege($1, oid, 'EXECUTE') ORDER BY 1""",
            RELAY_ROLE,
        )
    finally:
        await admin.close()
    assert writes == []
    assert [r[0] for r in runs_as_owner] == [
        "move_relay_position",
        "start_relay_position",
        "take_relay_turn",
    ]


async def test_the_relay_role_may_not_move_its_position_below_the_store(
    isolated_db: IsolatedDatabase,
) -> None:
    """A position below 0 is none of the store's: the row keeps where the relay was."""
    relay = await asyncpg.connect(as_role(isolated_db.url, RELAY_ROLE))
    try:
        await relay.execute("SELECT start_relay_position('relay:nats')")
        for moved_to in (-1, None):
            with pytest.raises(asyncpg.InvalidParameterValueError):
                await relay.execute("SELECT move_relay_position('relay:nats', $1)", moved_to)
        position = "SELECT position FROM projection_positions WHERE name = 'relay:nats'"
        assert await relay.fetchval(position) == 0
    finally:
        await relay.close()


async def test_the_projector_role_writes_the_views_and_deliveries_and_no_history_or_token(
    isolated_db: IsolatedDatabase,
) -> None:
    """``ledger project`` connects as ledger_projector: it reads the store and writes the
    views, their positions and the webhook deliveries. ledger_service, which it took before,
    may append events and make tokens: a projector's host held the whole ledger."""
    [position] = await isolated_db.store.append(
        [StoredEvent(uuid.uuid4(), 1, "tests.projector:CreditsSpent", b'{"amount": 1}')]
    )
    projector = await asyncpg.connect(as_role(isolated_db.url, PROJECTOR_ROLE))
    try:
        assert await projector.fetchval("SELECT max(notification_id) FROM stored_events") == (
            position
        )
        async with projector.transaction():
            await projector.execute("TRUNCATE balances")
            await projector.execute(
                """INSERT INTO projection_positions (name, position) VALUES ('balances', $1)
                   ON CONFLICT (name) DO UPDATE SET position = excluded.position""",
                position,
            )
        await projector.fetch("SELECT * FROM webhook_endpoints")
        await projector.fetch("SELECT * FROM webhook_deliveries FOR UPDATE")
        await projector.fetch("SELECT * FROM webhook_attempts")
        for statement in (
            "INSERT INTO stored_events SELECT * FROM stored_events LIMIT 0",
            "UPDATE stored_events SET topic = topic",
            "DELETE FROM snapshots",
            "TRUNCATE stored_events",
            "SELECT append(0, '{}', '{}')",
            "SELECT append_one(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            "INSERT INTO claims SELECT * FROM claims LIMIT 0",
            "SELECT count(*) FROM claims",
            "SELECT count(*) FROM api_tokens",
            "INSERT INTO api_tokens SELECT * FROM api_tokens LIMIT 0",
            "UPDATE api_tokens SET revoked_at = NULL",
            "UPDATE webhook_endpoints SET url = url",
            "INSERT INTO webhook_endpoints (endpoint_id) VALUES ('we_made_by_the_projector')",
            "SELECT start_relay_position('relay:nats')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await projector.execute(statement)
    finally:
        await projector.close()
    admin = await asyncpg.connect(isolated_db.url)
    try:
        runs_as_owner = await admin.fetch(
            """SELECT proname FROM pg_proc
               WHERE pronamespace = 'public'::regnamespace AND prosecdef
                 AND has_function_privilege($1, oid, 'EXECUTE')""",
            PROJECTOR_ROLE,
        )
        refused = await admin.fetchval(
            "SELECT NOT has_database_privilege($1, current_database(), 'CREATE, TEMPORARY')",
            PROJECTOR_ROLE,
        )
    finally:
        await admin.close()
    assert runs_as_owner == []
    assert refused


@pytest.mark.parametrize("role", [PROJECTOR_ROLE, SERVICE_ROLE])
async def test_a_relays_position_is_moved_by_its_functions_alone_not_by_another_role(
    isolated_db: IsolatedDatabase, role: str
) -> None:
    """ledger_projector and ledger_service write the views' positions, in the same table as
    the relay's: they could move the relay's on (events it would never publish) or back, or
    delete it (published again) (a security review). Row security lets them read a relay's
    row, write their views' rows, and not a relay's; TRUNCATE, which row security lets by, is
    not theirs."""
    [position] = await isolated_db.store.append(
        [StoredEvent(uuid.uuid4(), 1, "tests.relay:CreditsSpent", b'{"amount": 1}')]
    )
    relay = await asyncpg.connect(as_role(isolated_db.url, RELAY_ROLE))
    try:
        await relay.execute("SELECT start_relay_position('relay:nats')")
        await relay.execute("SELECT move_relay_position('relay:nats', $1)", position)
    finally:
        await relay.close()
    relay_rows = "SELECT name, position FROM projection_positions WHERE name LIKE 'relay:%'"
    other = await asyncpg.connect(as_role(isolated_db.url, role))
    try:
        await other.execute("INSERT INTO projection_positions (name) VALUES ('balances')")
        for statement in (
            "INSERT INTO projection_positions (name, position) VALUES ('relay:nats:OTHER', 9)",
            """INSERT INTO projection_positions (name, position) VALUES ('relay:nats', 1000000)
               ON CONFLICT (name) DO UPDATE SET position = excluded.position""",
            "UPDATE projection_positions SET name = 'relay:nats:OTHER' WHERE name = 'balances'",
            "TRUNCATE projection_positions",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await other.execute(statement)
        # Row security hides a relay's row from these: they change nothing, and say so.
        assert (
            await other.execute(
                "UPDATE projection_positions SET position = 1000000 WHERE name = 'relay:nats'"
            )
            == "UPDATE 0"
        )
        assert (
            await other.execute(
                "DELETE FROM projection_positions WHERE starts_with(name, 'relay:')"
            )
            == "DELETE 0"
        )
        # It reads them (GET /metrics shows the relay's lag), and writes its views' as before.
        assert [tuple(r) for r in await other.fetch(relay_rows)] == [("relay:nats", position)]
        async with other.transaction():
            await other.execute(
                """INSERT INTO projection_positions (name, position) VALUES ('balances', $1)
                   ON CONFLICT (name) DO UPDATE SET position = excluded.position""",
                position,
            )
            await other.execute("UPDATE projection_positions SET position = 0")
            await other.execute("DELETE FROM projection_positions WHERE name = 'balances'")
        assert await other.fetchval("SELECT count(*) FROM projection_positions") == 1
    finally:
        await other.close()
    assert [tuple(r) for r in await isolated_db.pool.fetch(relay_rows)] == [
        ("relay:nats", position)
    ]


async def test_a_database_set_up_before_relay_positions_were_the_relays_own_is_upgraded(
    isolated_db: IsolatedDatabase,
) -> None:
    """Set up by the previous release: no row security on projection_positions, TRUNCATE
    granted. Set up again, its relay's row stays where it was and is the relay's alone; set
    up once more, nothing changes."""
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """ALTER TABLE projection_positions DISABLE ROW LEVEL SECURITY;
               DROP POLICY positions_read ON projection_positions;
               DROP POLICY views_positions_written ON projection_positions;
               GRANT TRUNCATE ON projection_positions TO ledger_service, ledger_projector;
               DELETE FROM schema_migrations WHERE version >= 30"""
        )
        await admin.execute("SELECT move_relay_position('relay:nats', 7)")
        await isolated_db.pool.execute(
            "UPDATE projection_positions SET position = 8 WHERE name = 'relay:nats'"
        )  # the previous release let the service do that

        assert await set_up(admin) == [
            "0030_relay_positions_the_relays_own.sql",
            "0031_deliveries_due_per_endpoint.sql",
        ]
        assert await set_up(admin) == []
        truncates = await admin.fetchval(
            "SELECT has_table_privilege($1, 'projection_positions', 'TRUNCATE')"
            " OR has_table_privilege($2, 'projection_positions', 'TRUNCATE')",
            SERVICE_ROLE,
            PROJECTOR_ROLE,
        )
    finally:
        await admin.close()
    assert not truncates
    assert (
        await isolated_db.pool.execute(
            "UPDATE projection_positions SET position = 9 WHERE name = 'relay:nats'"
        )
        == "UPDATE 0"
    )
    assert (
        await isolated_db.pool.fetchval(
            "SELECT position FROM projection_positions WHERE name = 'relay:nats'"
        )
        == 8
    )

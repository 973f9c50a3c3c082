"""The database's roles, stored functions, migrations and grants, applied at start-up.

Run as a role that may create roles (a superuser in development and tests, an
administrator's URL in production: ``DATABASE_ADMIN_URL``), in this order and
under one advisory lock so that processes starting together take turns (all but the
owner's role, which set-up makes and joins before the lock: see ``set_up``):

1. the roles: ``ledger_owner`` (owns everything, never logs in), ``ledger_service``
   (what the service connects as), ``ledger_projector`` (what ``ledger project`` on a host
   of its own connects as: it reads the store and writes the views and the deliveries,
   nothing else) and ``ledger_relay`` (what ``ledger relay`` connects as: it reads the
   store and moves its own position, nothing else); the last three own nothing, and
   set-up stops here if any is more than a login (``refuse_a_powerful_role``);
2. as ``ledger_owner``: every stored function, one per file in ``sql/functions/``,
   with ``CREATE OR REPLACE`` (so the current definition is the file, not the
   last migration that touched it);
3. every numbered migration in ``migrations/`` not applied yet, each in its own
   transaction, recorded in ``schema_migrations`` (tables and data only);
4. ``sql/grants.sql``: what ``ledger_service``, ``ledger_projector`` and ``ledger_relay``
   may do;
5. as the set-up's role again: ``sql/advisory_locks.sql``, the advisory lock functions
   taken from PUBLIC and left to ``ledger_owner``, so that no login role can hold a lock
   every append waits for; a role that may not (no superuser: a managed PostgreSQL) goes
   on and says so in one WARNING line (``keep_advisory_locks_to_owner``); on a database
   whose lock functions are still PUBLIC's, only ``ledger db setup`` after the one that
   brought the owner's turn functions takes them (``_lock_functions_wait``).
"""

from __future__ import annotations

import contextlib
import logging
from importlib import resources

import asyncpg

from ledger.store.event_store import Connection
from ledger.store.scram import scram_sha_256

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 748200102

OWNER_ROLE = "ledger_owner"
SERVICE_ROLE = "ledger_service"
RELAY_ROLE = "ledger_relay"
PROJECTOR_ROLE = "ledger_projector"
LOGIN_ROLES = (SERVICE_ROLE, PROJECTOR_ROLE, RELAY_ROLE)


def _sql_files(folder: str) -> list[tuple[str, str]]:
    """(name, sql) of every ``.sql`` file in a packaged folder, in name order."""
    found = resources.files("ledger.store").joinpath(folder)
    return sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in found.iterdir()
        if entry.name.endswith(".sql")
    )


def packaged(path: str) -> str:
    """A packaged file's text (``path`` under ``ledger/store``)."""
    return resources.files("ledger.store").joinpath(path).read_text(encoding="utf-8")


def available_migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as (version, name, sql), oldest first."""
    return [(int(name.split("_", 1)[0]), name, sql) for name, sql in _sql_files("migrations")]


async def _create_role(connection: Connection, name: str, login: bool) -> None:
    exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    if exists:
        return
    # Another database's set-up on this server may make it at the same moment.
    with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
        await connection.execute(f"CREATE ROLE {name} {'LOGIN' if login else 'NOLOGIN'}")


async def _take_ownership(connection: Connection) -> None:
    """Tables and functions made before the roles existed become the owner's."""
    rows = await connection.fetch(
        """SELECT format('ALTER %s %s OWNER TO %I',
                         CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                         c.oid::regclass, $1::text)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S')
             AND pg_get_userbyid(c.relowner) <> $1
             AND NOT (c.relkind = 'S' AND EXISTS (
                 SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
           UNION ALL
           SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, $1::text)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> $1""",
        OWNER_ROLE,
    )
    for row in rows:
        await connection.execute(row[0])


async def set_up(
    connection: Connection,
    *,
    service_password: str | None = None,
    relay_password: str | None = None,
    projector_password: str | None = None,
    at_start_up: bool = False,
) -> list[str]:
    """Roles, functions, migrations and grants (see the module); return the migrations applied.

    ``at_start_up``: a process's own set-up as it starts (``DATABASE_ADMIN_URL``), not
    ``ledger db setup``: it leaves lock functions it finds PUBLIC's on a database set up
    before as they are (``_lock_functions_wait``)."""
    # The owner, and set-up's role its member, once and before the migration lock: a
    # database set up before by a superuser leaves the lock functions to the owner's members
    # alone, so an administrator that is not one yet becomes one first; set-up then gives
    # the owner what it owns and acts as it (membership lets it do both).
    await _create_role(connection, OWNER_ROLE, login=False)
    # Outside the lock, so another set-up may grant the same at the same moment (a new
    # server's first start with two processes, two databases on one server): PostgreSQL then
    # refuses the second insert of the membership, which is there, committed by the other.
    with contextlib.suppress(asyncpg.UniqueViolationError):
        await connection.execute(f"GRANT {OWNER_ROLE} TO current_user")
    await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        database = await connection.fetchval("SELECT current_database()")
        for role, password in (
            (SERVICE_ROLE, service_password),
            (PROJECTOR_ROLE, projector_password),
            (RELAY_ROLE, relay_password),
        ):
            await _create_login(connection, role, database, password)
        for role in LOGIN_ROLES:
            await refuse_a_powerful_role(connection, role)
        await connection.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {OWNER_ROLE}")
        await _take_ownership(connection)
        # Read before this set-up makes the turn functions.
        wait = await _lock_functions_wait(connection, at_start_up=at_start_up)
        await connection.execute(f"SET ROLE {OWNER_ROLE}")
        try:
            for _, sql in _sql_files("sql/functions"):
                await connection.execute(sql)
            applied = await _apply_migrations(connection)
            await apply_grants(connection)
        finally:
            await connection.execute("RESET ROLE")
        if wait:
            log.warning(
                "the advisory lock functions stay PUBLIC's until the next `ledger db setup`: "
                "processes of the release before this one take their turns with them (README, "
                '"Database roles"); run it once every process runs this release'
            )
        else:
            await keep_advisory_locks_to_owner(connection)
        return applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


async def _create_login(
    connection: Connection, role: str, database: str, password: str | None
) -> None:
    """A role that logs in to ``database`` and may make nothing there, ``password`` set if given."""
    await _create_role(connection, role, login=True)
    if password is not None:
        # Its SCRAM verifier, never the password: the server logs DDL where
        # log_statement says so (ledger/store/scram.py).
        verifier = scram_sha_256(password)
        await connection.execute(f"ALTER ROLE {role} PASSWORD {_literal(verifier)}")
    await connection.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    # No temporary objects: nothing needs them, and a caller's own could stand in for
    # the owner's tables in a function that does not name its schema. No schemas of its
    # own either: one named after a role would come first in that role's search_path.
    await connection.execute(
        f'REVOKE CREATE, TEMPORARY ON DATABASE "{database}" FROM PUBLIC, {role}'
    )
    await connection.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")


class ServiceRoleTooPowerful(Exception):
    """``ledger_service`` (or ``ledger_projector``, ``ledger_relay``) may do what no grant of
    set-up can take back: it could drop or rewrite history. The message says what, and how
    to take it back."""


async def refuse_a_powerful_role(connection: Connection, role: str) -> None:
    """Raise ServiceRoleTooPowerful unless ``role`` (one of ``LOGIN_ROLES``)
    owns nothing and is no more than a login: a role made before set-up (an operator's
    ``CREATE ROLE``, a database made ``OWNER ledger_service``) keeps whatever it was given,
    and a database's owner may drop it, create schemas and grant itself back what set-up
    revoked."""
    row = await connection.fetchrow(
        """SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
                  pg_has_role(r.oid, d.datdba, 'MEMBER') AS owns_database,
                  ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members m
                        WHERE m.member = r.oid ORDER BY 1) AS member_of,
                  ARRAY(SELECT n.nspname::text FROM pg_namespace n
                        WHERE has_schema_privilege(r.oid, n.oid, 'CREATE')
                          AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
                        ORDER BY 1) AS creates_in
           FROM pg_roles r, pg_database d
           WHERE r.rolname = $1 AND d.datname = current_database()""",
        role,
    )
    assert row is not None  # set-up has just made the role
    database = await connection.fetchval("SELECT current_database()")
    found = [
        said
        for held, said in (
            (row["rolsuper"], "is a superuser"),
            (row["rolcreaterole"], "may create roles"),
            (row["rolcreatedb"], "may create databases"),
            (row["rolreplication"], "may replicate"),
            (row["rolbypassrls"], "bypasses row security"),
            (row["owns_database"], f'owns the database "{database}"'),
            (row["member_of"], f"is a member of {', '.join(row['member_of'])}"),
            (row["creates_in"], f"may create objects in schema {', '.join(row['creates_in'])}"),
        )
        if held
    ]
    if found:
        who = {SERVICE_ROLE: "the service", PROJECTOR_ROLE: "the projector"}.get(role, "the relay")
        raise ServiceRoleTooPowerful(
            f"{role} {'; '.join(found)}: {who} could rewrite or drop history. "
            f"It must be a login that owns nothing (ALTER ROLE {role} NOSUPERUSER "
            f'NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS, ALTER DATABASE "{database}" '
            f"OWNER TO an administrator, REVOKE its roles and grants), then set up again"
        )


async def _apply_migrations(connection: Connection) -> list[str]:
    await connection.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version integer PRIMARY KEY,
               name text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    done = {r["version"] for r in await connection.fetch("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, sql in available_migrations():
        if version in done:
            continue
        async with connection.transaction():
            await connection.execute(sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


async def apply_grants(connection: Connection) -> None:
    """What ``ledger_service``, ``ledger_projector`` and ``ledger_relay`` may do
    (``sql/grants.sql``), as the tables' owner."""
    await connection.execute(packaged("sql/grants.sql"))


async def _lock_functions_wait(connection: Connection, *, at_start_up: bool) -> bool:
    """Whether this set-up leaves the advisory lock functions PUBLIC's, read before it makes
    the owner's turn functions.

    Processes of the release before those functions, still running in a rolling upgrade,
    take their relay's and reconciler's turns and answer as-of reads with the lock functions
    themselves. So the set-up that brings the turn functions to a database set up before
    leaves the lock functions PUBLIC's, and so does every process's own set-up at its start
    while they are (each new instance of a rolling upgrade runs one, and the old ones still
    serve); ``ledger db setup``, run once every process runs this release, takes them (as
    ``append()`` of fifteen arrays stayed one release). A new database is closed at once."""
    if not await connection.fetchval("SELECT to_regclass('public.stored_events') IS NOT NULL"):
        return False
    if not await connection.fetchval("SELECT to_regprocedure('public.take_relay_turn(text)')"):
        return True
    return at_start_up and bool(
        await connection.fetchval(
            "SELECT has_function_privilege('public', 'pg_catalog.pg_advisory_lock(bigint)', "
            "'EXECUTE')"
        )
    )


async def keep_advisory_locks_to_owner(connection: Connection) -> None:
    """Take the advisory lock functions from PUBLIC and the login roles and leave them to
    ``ledger_owner`` (``sql/advisory_locks.sql``), as the set-up's role.

    Only a superuser or the functions' owner may change their privileges (REVOKE by another
    role changes nothing and only warns). Where set-up's role may not, set-up goes on and
    says once what stays open: any role on the database may still hold a lock that every
    append waits for."""
    may = await connection.fetchval(
        "SELECT pg_has_role(proowner, 'USAGE') FROM pg_proc "
        "WHERE oid = 'pg_catalog.pg_advisory_lock(bigint)'::regprocedure"
    )
    if may:
        await connection.execute(packaged("sql/advisory_locks.sql"))
        return
    role = await connection.fetchval("SELECT current_user")
    database = await connection.fetchval("SELECT current_database()")
    log.warning(
        "%s may not take PostgreSQL's advisory lock functions from PUBLIC (only a superuser "
        'may): any role that logs in to "%s" can still hold a lock that every append waits '
        'for (README, "Database roles"); run `ledger db setup` as a superuser to close it',
        role,
        database,
    )


async def owner_session(connection: Connection) -> None:
    """Act as ``ledger_owner`` on this connection (a role that may create roles may)."""
    await connection.execute(f"GRANT {OWNER_ROLE} TO current_user")
    await connection.execute(f"SET ROLE {OWNER_ROLE}")


async def pending_migrations(connection: Connection) -> list[str]:
    """The packaged migrations this database has not applied (read as any role)."""
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        {r["version"] for r in await connection.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return [name for version, name, _ in available_migrations() if version not in done]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

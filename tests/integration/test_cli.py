"""The ``ledger`` command line, run as a user runs it, against the test database."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from api.access.tokens import TokenService
from api.database import as_role
from ledger.domain.ids import account_stream_id
from ledger.store.migrate import _MIGRATION_LOCK as MIGRATION_LOCK
from tests.conftest import IsolatedDatabase, _with_database, fresh_database, unique
from tests.support import cli
from tests.support.events import caught_up, stream_events

ledger = functools.partial(cli.ledger, seconds=60)


async def test_accounts_open_then_a_token_for_it_authenticates(
    database_url: str, pool: asyncpg.Pool
) -> None:
    account_id = unique("acct")

    opened = await ledger(database_url, "accounts", "open", account_id, "--allowance", "250")
    created = await ledger(
        database_url, "tokens", "create", "--scope", "credits", "--account", account_id
    )

    assert opened.returncode == 0, opened.stderr
    assert f"opened {account_id}: monthly allowance 250" in opened.stdout
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    principal = await TokenService(pool).authenticate(token)
    assert principal is not None
    assert principal.account_id == account_id
    row = await pool.fetchrow("SELECT * FROM api_tokens WHERE token_id = $1", principal.token_id)
    assert row["token_hash"] == hashlib.sha256(token.encode()).digest()
    assert all(token not in str(value) for value in row.values())  # only the hash is kept


async def test_opening_an_account_twice_fails_clearly(database_url: str) -> None:
    account_id = unique("acct")
    await ledger(database_url, "accounts", "open", account_id)

    again = await ledger(database_url, "accounts", "open", account_id)

    assert again.returncode == 1
    assert f"account {account_id} already exists" in again.stderr


async def test_an_account_id_it_cannot_take_is_refused_before_the_database_is_reached() -> None:
    """Checked by the ledger only once connected: with the database away, the typo was
    "cannot connect", and on the embedded server it waited for the server to start."""
    refused = await ledger(NOTHING_LISTENS, "accounts", "open", "acct 42")

    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "Error: Invalid value for 'ACCOUNT_ID': An account id is 1 to 100 letters, digits "
        "and _ . : - (for example acct_123)."
    )


@pytest.mark.parametrize("account_id", ["x" * 100_000, ""], ids=["100,000 characters", "empty"])
@pytest.mark.parametrize(
    "command",
    [
        ("accounts", "show", "{}"),
        ("audit", "export", "{}"),
        ("grants", "create", "{}", "10"),
        ("grants", "list", "{}"),
        ("grants", "void", "{}", "g_1"),
        ("tokens", "create", "--scope", "credits", "--account", "{}"),
        ("stripe", "reconcile", "--account", "{}"),
    ],
    ids=lambda command: " ".join(command[:2]),
)
async def test_an_account_id_no_account_can_have_is_refused_in_one_short_line(
    command: tuple[str, ...], account_id: str
) -> None:
    """Only `accounts open` checked the id: the others asked the database (or waited for
    the embedded server, or said "cannot connect") and then said "no account <the id>",
    100,000 characters of it, or "no account " for an empty one."""
    args = [account_id if arg == "{}" else arg for arg in command]
    refused = await ledger(NOTHING_LISTENS, *args)

    assert refused.returncode == 2, refused.stderr[-500:]
    assert refused.stderr.splitlines()[-1].endswith(
        "An account id is 1 to 100 letters, digits and _ . : - (for example acct_123)."
    )
    assert len(refused.stderr) < 1000


async def test_an_allowance_the_views_cannot_hold_is_refused_before_anything_is_recorded(
    database_url: str, pool: asyncpg.Pool
) -> None:
    account_id = unique("acct")

    refused = await ledger(
        database_url, "accounts", "open", account_id, "--allowance", "99999999999999999999"
    )

    assert refused.returncode == 2
    assert "Invalid value for '--allowance'" in refused.stderr
    assert "Traceback" not in refused.stderr
    stream = account_stream_id(account_id)
    assert (
        await pool.fetchval("SELECT count(*) FROM stored_events WHERE originator_id = $1", stream)
        == 0
    )


async def test_a_credits_token_needs_an_existing_account(database_url: str) -> None:
    missing = await ledger(
        database_url, "tokens", "create", "--scope", "credits", "--account", "acct_nope"
    )
    unbound = await ledger(database_url, "tokens", "create", "--scope", "credits")

    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    assert unbound.returncode == 2
    assert "needs --account" in unbound.stderr


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("n" * 201, "at most 200 characters, not 201"),
        ("n" * 100_000, "at most 200 characters, not 100,000"),
        ("billing\nservice", "no control characters or line breaks"),
        ("  ", "is blank: give a name, or leave --name out"),
    ],
    ids=["201 characters", "100,000 characters", "a line break", "blank"],
)
async def test_a_token_name_too_long_or_unprintable_is_refused_in_one_line(
    database_url: str, pool: asyncpg.Pool, name: str, said: str
) -> None:
    """`tokens create --name` stored a name of any length (100,000 characters here; an
    argument can hold 128 KiB), which `tokens list` then printed whole."""
    refused = await ledger(
        database_url, "tokens", "create", "--scope", "ledger:write", "--name", name
    )
    longest = await ledger(
        database_url, "tokens", "create", "--scope", "ledger:write", "--name", "m" * 200
    )

    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[-1] == f"Error: Invalid value for '--name': {said}"
    assert len(refused.stderr) < 500  # the name is not echoed
    assert await pool.fetchval("SELECT count(*) FROM api_tokens WHERE name = $1", name) == 0
    assert longest.returncode == 0, longest.stderr


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["grants", "create", "ACCOUNT", "5", "--reason", "caf\udce9"], "'--reason'"),
        (["grants", "void", "ACCOUNT", "grant_x", "--reason", "caf\udce9"], "'--reason'"),
        (["grants", "void", "ACCOUNT", "grant_\udcff"], "'GRANT_ID'"),
        (["tokens", "create", "--scope", "ledger:write", "--name", "caf\udce9"], "'--name'"),
        (["accounts", "list", "--after", "acct_\udcff"], "'--after'"),
    ],
    ids=["grant reason", "void reason", "grant id", "token name", "page after"],
)
async def test_text_that_is_not_utf8_is_a_usage_error_and_nothing_is_recorded(
    database_url: str, pool: asyncpg.Pool, arguments: list[str], named: str
) -> None:
    """An argument's bytes that are not UTF-8 (``caf\\xe9``, Latin-1's "café") reach Python
    as lone surrogates, which neither PostgreSQL nor JSON can hold: a grant's reason was
    "unexpected error: UnicodeEncodeError" and a token's name or ``--after`` "database
    error", exit 1, once the database was reached."""
    account_id = unique("acct")
    opened = await ledger(database_url, "accounts", "open", account_id)
    assert opened.returncode == 0, opened.stderr
    events_before = await pool.fetchval("SELECT count(*) FROM stored_events")
    tokens_before = await pool.fetchval("SELECT count(*) FROM api_tokens")

    refused = await ledger(database_url, *[account_id if a == "ACCOUNT" else a for a in arguments])

    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"Error: Invalid value for {named}: is not UTF-8 text"
    )
    assert await pool.fetchval("SELECT count(*) FROM stored_events") == events_before
    assert await pool.fetchval("SELECT count(*) FROM api_tokens") == tokens_before


async def test_revoked_tokens_stop_working(database_url: str, pool: asyncpg.Pool) -> None:
    created = await ledger(
        database_url, "tokens", "create", "--scope", "ledger:audit", "--name", "auditor"
    )
    token = created.stdout.strip().splitlines()[-1]
    principal = await TokenService(pool).authenticate(token)
    assert principal is not None

    revoked = await ledger(database_url, "tokens", "revoke", principal.token_id)
    again = await ledger(database_url, "tokens", "revoke", principal.token_id)
    unknown = await ledger(database_url, "tokens", "revoke", "0" * 16)

    assert revoked.returncode == 0
    assert await TokenService(pool).authenticate(token) is None
    assert again.returncode == 1
    assert unknown.returncode == 1
    assert unknown.stderr == f"Error: no live token {'0' * 16}\n"


# Longer than a notification's payload: it was a traceback (a CLI review), then the 8,000
# characters echoed back.
@pytest.mark.parametrize("given", ["", "  ", "t" * 8000, "acct_42"], ids=len)
async def test_revoking_what_is_no_token_id_is_refused_in_one_line_before_connecting(
    given: str,
) -> None:
    """`tokens revoke ""` asked the database and said "no live token " with nothing after."""
    refused = await ledger(NOTHING_LISTENS, "tokens", "revoke", given)

    assert refused.returncode == 2, refused.stderr
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: Invalid value for 'TOKEN_ID': is "), line
    assert "`ledger tokens list`" in line
    assert len(refused.stderr) < 500


async def test_a_token_is_revoked_by_the_token_itself_and_its_secret_never_echoed(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """A leaked token is what an operator has in hand: `tokens revoke <token>` said "no live
    token ldg_…", the secret echoed to the terminal, and left the token working."""
    created = await ledger(
        database_url, "tokens", "create", "--scope", "ledger:write", "--name", unique("leaked")
    )
    token = created.stdout.strip().splitlines()[-1]
    principal = await TokenService(pool).authenticate(token)
    assert principal is not None

    revoked = await ledger(database_url, "tokens", "revoke", token)
    again = await ledger(database_url, "tokens", "revoke", token)

    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"revoked {principal.token_id}\n"
    assert await TokenService(pool).authenticate(token) is None
    assert again.returncode == 1
    assert again.stderr == f"Error: no live token {principal.token_id}\n"


async def python_script(
    database_url: str, script: str, *arguments: str
) -> subprocess.CompletedProcess[str]:
    """``script`` run by a Python of its own in the project, on ``database_url``."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, *arguments],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=cli.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_HELP_OF_EACH = """
import contextlib, io, json, sys
from api.cli import main

shown = []
for command in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*command, "--help"], prog_name="ledger")
        except SystemExit as end:
            code = end.code
    shown.append({"command": command, "code": code, "stdout": out.getvalue()})
print(json.dumps(shown))
"""


async def test_every_command_has_help(database_url: str) -> None:
    """`ledger --help` as a user runs it, then every command's `--help` asked in turn of
    the command line in one process: a process each, twelve imports of it, took 18 s."""
    commands = [
        ["serve"],
        ["accounts", "open"],
        ["tokens", "create"],
        ["tokens", "revoke"],
        ["tokens", "list"],
        ["accounts", "show"],
        ["accounts", "list"],
        ["projections", "status"],
        ["projections", "rebuild"],
        ["stripe", "reconcile"],
        ["config", "check"],
    ]
    root = await ledger(database_url, "--help")
    each = await python_script(database_url, _HELP_OF_EACH, json.dumps(commands))

    assert root.returncode == 0, root.stderr
    assert "Usage:" in root.stdout
    assert each.returncode == 0, each.stderr
    shown = json.loads(each.stdout)
    assert [answer["command"] for answer in shown] == commands
    for answer in shown:
        assert answer["code"] == 0, answer
        assert f"Usage: ledger {' '.join(answer['command'])} [OPTIONS]" in answer["stdout"], answer


NOTHING_LISTENS = "postgresql://nobody@127.0.0.1:1/nothing"


@pytest.mark.parametrize(
    "command",
    [("accounts", "list"), ("audit", "verify"), ("projections", "rebuild"), ("db", "setup")],
    ids=lambda command: " ".join(command),
)
async def test_a_database_it_cannot_reach_is_one_line_naming_it(
    command: tuple[str, ...], postgres_server_url: str
) -> None:
    unreachable = await ledger(NOTHING_LISTENS, *command)
    missing_url = urlunsplit(urlsplit(postgres_server_url)._replace(path="/ledger_no_such_db"))
    missing = await ledger(missing_url, *command)

    # audit verify's 1 says it found something: could not run is 2 (its --help).
    code = 2 if command == ("audit", "verify") else 1
    assert unreachable.returncode == code
    [line] = unreachable.stderr.splitlines()
    assert line.startswith(f"Error: cannot connect to {NOTHING_LISTENS} (")
    assert line.endswith("): is PostgreSQL running there? (DATABASE_URL)")
    assert missing.returncode == code
    [line] = missing.stderr.splitlines()
    assert line.startswith("Error: cannot connect to postgresql://")
    assert line.endswith('(database "ledger_no_such_db" does not exist): check DATABASE_URL')


async def test_a_data_folder_the_embedded_server_cannot_be_kept_in_is_one_line(
    tmp_path: Path,
) -> None:
    """With no DATABASE_URL it said "Error: Not a directory: …/data", naming no variable (a
    newcomer's review)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")

    listed = await ledger("", "accounts", "list", env={"LEDGER_DATA_DIR": str(a_file / "data")})

    assert listed.returncode == 1
    assert listed.stderr.splitlines() == [
        f"Error: the embedded PostgreSQL cannot be kept in {a_file / 'data'}, which cannot be "
        "made (Not a directory): set LEDGER_DATA_DIR to a folder this user may write, or "
        "DATABASE_URL"
    ]


async def test_a_public_key_given_as_the_signing_key_is_a_usage_error_in_one_line(
    tmp_path: Path,
) -> None:
    """`audit checkpoint --key FILE.pub` said so, and exited 1 where a usage error exits 2
    (a --key file that is not there is click's, exit 2): refused before the database is
    reached, as `audit verify --public-key FILE` (the private one) is, in one line."""
    key = tmp_path / "signing"
    made = await ledger(NOTHING_LISTENS, "audit", "keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr

    swapped = await ledger(NOTHING_LISTENS, "audit", "checkpoint", "--key", f"{key}.pub")
    missing = await ledger(NOTHING_LISTENS, "audit", "checkpoint", "--key", f"{key}.nope")

    assert swapped.returncode == missing.returncode == 2, swapped.stderr
    assert swapped.stderr.splitlines() == [
        f"Error: {key}.pub is a public key: --key takes the private key, the FILE "
        "`ledger audit keygen --out FILE` wrote (not FILE.pub)"
    ]
    assert swapped.stdout == ""


async def test_a_reconcile_that_cannot_reach_the_database_exits_2_not_as_its_findings() -> None:
    """It exited 1, as for a purchase Stripe could not be asked about; now 1 is a purchase to
    look at and 2 a run that could not do its work, as `audit verify`'s (its --help)."""
    stripe = {"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_API_BASE": "http://127.0.0.1:9"}

    unreachable = await ledger(NOTHING_LISTENS, "stripe", "reconcile", env=stripe)
    helped = await ledger(NOTHING_LISTENS, "stripe", "reconcile", "--help")

    assert unreachable.returncode == 2, unreachable.stderr
    [line] = unreachable.stderr.splitlines()
    assert line.startswith(f"Error: cannot connect to {NOTHING_LISTENS} (")
    assert "Exit codes:" in helped.stdout
    assert "2  could not check them all" in helped.stdout


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        (("accounts", "list"), "DATABASE_ADMIN_URL"),
        (("projections", "rebuild", "--jobs", "1"), "DATABASE_ADMIN_URL"),
        (("db", "setup"), "DATABASE_ADMIN_URL"),
        (("db", "setup", "--admin-url", NOTHING_LISTENS), "--admin-url"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else value,
)
async def test_an_admin_url_it_cannot_reach_is_named_as_the_one_to_fix(
    command: tuple[str, ...], variable: str, database_url: str
) -> None:
    """The administrator's URL unreachable, the service's fine: the line sent the operator
    to DATABASE_URL."""
    env = {} if variable == "--admin-url" else {"DATABASE_ADMIN_URL": NOTHING_LISTENS}
    refused = await ledger(database_url, *command, env=env)

    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith(f"Error: cannot connect to {NOTHING_LISTENS} (")
    assert line.endswith(f"): is PostgreSQL running there? ({variable})")


@contextlib.contextmanager
def _full_disk() -> Iterator[int]:
    with open("/dev/full", "w") as full:
        yield full.fileno()


@contextlib.contextmanager
def _pipe_nobody_reads() -> Iterator[int]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        yield write_end
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    ("output", "said", "ended"),
    [
        (_full_disk, "Error: No space left on device\n", 1),
        (_pipe_nobody_reads, "", -signal.SIGPIPE),
    ],
    ids=["a full disk", "a reader that went away"],
)
async def test_output_that_cannot_be_written_is_one_line_and_leaves_no_unseen_token(
    database_url: str,
    pool: asyncpg.Pool,
    output: Callable[[], contextlib.AbstractContextManager[int]],
    said: str,
    ended: int,
) -> None:
    """Standard output on a full disk: a traceback, and a live token whose secret nobody
    saw (a CLI review). A reader that had enough (`ledger audit export | head`): nothing
    said, where it was "Error: Broken pipe" (an audit review), and the end by SIGPIPE."""
    name = unique("unseen")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        with output() as stdout:
            return subprocess.run(  # noqa: S603 (the arguments are this test's own)
                [sys.executable, "-m", "api.cli", *args],
                env={**os.environ, "DATABASE_URL": database_url},
                cwd=cli.ROOT,
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )

    listed = await asyncio.to_thread(run, "config", "check")
    created = await asyncio.to_thread(
        run, "tokens", "create", "--scope", "ledger:write", "--name", name
    )

    for failed in (listed, created):
        assert (failed.returncode, failed.stderr) == (ended, said)
    revoked = await pool.fetchval(
        "SELECT bool_and(revoked_at IS NOT NULL) FROM api_tokens WHERE name = $1", name
    )
    assert revoked is True


@pytest.mark.parametrize(
    "command",
    [("audit", "verify", "--jobs", "1"), ("audit", "export", "acct_piped")],
    ids=["audit verify", "audit export"],
)
async def test_a_reader_that_went_away_ends_the_command_quietly_by_sigpipe(
    isolated_db: IsolatedDatabase, command: tuple[str, ...]
) -> None:
    """`ledger audit verify | head -1` exited 1, which says of the audit "it found
    something" (and of `stripe reconcile` "a purchase to look at"): now it ends as Unix
    tools end there, by SIGPIPE (141 in a shell), saying nothing."""
    assert (await ledger(isolated_db.url, "accounts", "open", "acct_piped")).returncode == 0
    with _pipe_nobody_reads() as stdout:
        ended = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "api.cli", *command],
            env={**os.environ, "DATABASE_URL": isolated_db.url},
            cwd=cli.ROOT,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )

    assert (ended.returncode, ended.stderr) == (-signal.SIGPIPE, "")


async def test_audit_verify_on_a_database_never_set_up_sets_it_up_and_finds_nothing(
    postgres_server_url: str,
) -> None:
    """The audit changes nothing in a database that is set up; a fresh one it sets up as
    every command does (refusing it broke `ledger audit verify` on a new install)."""
    async with fresh_database(postgres_server_url) as url:
        audited = await ledger(url, "audit", "verify", "--jobs", "1")

    assert audited.returncode == 0, audited.stderr
    assert audited.stdout.splitlines()[-1].startswith("OK:")


async def test_audit_verify_applies_no_migration_to_a_database_of_an_older_release(
    postgres_server_url: str,
) -> None:
    """A database set up before a migration (an older release, a restored backup) is
    audited as it is, or not at all: the migration would change views the audit compares."""
    async with fresh_database(postgres_server_url) as url:
        assert (await ledger(url, "db", "setup")).returncode == 0
        connection = await asyncpg.connect(url)
        try:
            newest = await connection.fetchval(
                "DELETE FROM schema_migrations WHERE version = "
                "(SELECT max(version) FROM schema_migrations) RETURNING name"
            )
            audited = await ledger(url, "audit", "verify", "--jobs", "1")
            still_missing = await connection.fetchval(
                "SELECT NOT EXISTS (SELECT FROM schema_migrations WHERE name = $1)", newest
            )
        finally:
            await connection.close()

    assert audited.returncode == 2  # could not verify, not a finding (1)
    assert f"lacks migrations {newest}" in audited.stderr
    assert "Traceback" not in audited.stderr
    assert still_missing


async def test_a_database_never_set_up_says_so_and_what_to_do_in_one_short_line(
    pool: asyncpg.Pool,  # a database set up, so the server has the role ledger_service
    postgres_server_url: str,
) -> None:
    """The service's role on a fresh database (production before its migrate step) was
    told the names of all 26 migrations, 1,700 characters, and not that none ran."""
    async with fresh_database(postgres_server_url) as fresh:
        refused = await ledger(as_role(fresh, "ledger_service"), "accounts", "list")

    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line == (
        "Error: the database was never set up (it has none of the ledger's tables): run "
        "`ledger db setup` with DATABASE_ADMIN_URL set to a role that may create roles"
    )


@contextlib.asynccontextmanager
async def _role(server_url: str, options: str) -> AsyncIterator[str]:
    """A login role of the test's own (``options``: CREATEROLE…), on no table of the
    ledger's; dropped afterwards."""
    name = f"ledger_test_role_{os.urandom(4).hex()}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN {options}")
        yield name
    finally:
        with contextlib.suppress(asyncpg.PostgresError):
            await admin.execute(f"DROP OWNED BY {name}")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


@pytest.mark.parametrize(
    ("options", "command"),
    [("", ("accounts", "list")), ("", ("audit", "verify")), ("CREATEROLE", ("db", "setup"))],
    ids=["accounts list", "audit verify", "db setup by a role that owns no schema"],
)
async def test_a_role_without_rights_on_the_tables_is_one_line(
    database_url: str,
    pool: asyncpg.Pool,  # the database set up
    postgres_server_url: str,
    options: str,
    command: tuple[str, ...],
) -> None:
    """A role the database refuses a statement (permission denied) was a traceback."""
    async with (
        fresh_database(postgres_server_url) as fresh,
        _role(postgres_server_url, options) as role,
    ):
        # A set-up database, its tables the ledger's roles' (db setup: a fresh database
        # whose schema this role may not create in).
        target = fresh if command == ("db", "setup") else database_url
        url = as_role(target, role)
        refused = await ledger(url, *command)

    assert refused.returncode == (2 if command == ("audit", "verify") else 1), refused.stderr
    [line] = refused.stderr.splitlines()
    # "permission denied for schema public" (PostgreSQL 15), "… to grant role" (16 and later,
    # where CREATEROLE alone may not hand on a role it was not given with ADMIN).
    assert line.startswith("Error: database error: permission denied "), line


async def test_a_connection_ended_mid_command_is_one_line(database_url: str) -> None:
    """PostgreSQL ending the command's session (stopped, restarted, pg_terminate_backend)
    was asyncpg's traceback, two of them chained."""
    holder = await asyncpg.connect(database_url)
    try:
        # `db setup` waits for this lock (a set-up in progress elsewhere): a moment that
        # is surely mid-command, where its session is ended.
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        command = asyncio.ensure_future(ledger(database_url, "db", "setup"))
        waiting = None
        for _ in range(600):
            waiting = await holder.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event = 'advisory' AND pid <> pg_backend_pid()"
            )
            if waiting or command.done():
                break
            await asyncio.sleep(0.05)
        assert waiting, "db setup never waited for the lock"
        await holder.execute("SELECT pg_terminate_backend($1)", waiting)
        ended = await command
    finally:
        await holder.close()

    assert ended.returncode == 1, ended.stderr
    [line] = ended.stderr.splitlines()
    assert line.startswith("Error: lost the connection to the database mid-command ("), line
    assert line.endswith("terminating connection due to administrator command)"), line


@pytest.mark.parametrize("command", [("audit", "verify"), ("projections", "rebuild")])
async def test_more_jobs_than_a_machine_can_start_is_a_usage_error(
    command: tuple[str, ...],
) -> None:
    """``--jobs 100000`` started processes until the machine ground to a halt (each with a
    connection of its own, past PostgreSQL's 100): refused before anything starts."""
    refused = await ledger("postgresql://nobody@127.0.0.1:1/none", *command, "--jobs", "100000")

    assert refused.returncode == 2, refused.stderr
    assert "100000 is not in the range 1<=x<=64" in refused.stderr


async def test_a_command_on_an_account_whose_stream_cannot_be_loaded_is_one_line(
    isolated_db: IsolatedDatabase,
) -> None:
    """A row of the account's stream that does not decode (written by hand) made every
    command on it a traceback of the mapper's frames."""
    opened = await ledger(isolated_db.url, "accounts", "open", "acct_cli_unloadable")
    assert opened.returncode == 0, opened.stderr
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               VALUES ($1, 2, 'ledger.domain.events:CreditsSpent', '{"amount": "x"}', '\\x00')""",
            account_stream_id("acct_cli_unloadable"),
        )
    finally:
        await admin.close()

    granted = await ledger(isolated_db.url, "grants", "create", "acct_cli_unloadable", "10")

    assert granted.returncode == 1, granted.stderr
    [line] = granted.stderr.splitlines()
    assert line.startswith("Error: stream "), line
    assert "(CreditsSpent, version 2) cannot be read: ValidationError: " in line
    assert line.endswith("(see `ledger audit verify`)")


async def test_more_workers_than_a_machine_can_fork_is_refused_before_any_starts() -> None:
    """``--workers`` and ``WEB_CONCURRENCY`` had no upper bound either (each worker a
    process with a pool of its own)."""
    url = "postgresql://nobody@127.0.0.1:1/none"
    option = await ledger(url, "serve", "--workers", "100000")
    variable = await ledger(url, "serve", env={"WEB_CONCURRENCY": "100000"})

    assert option.returncode == 2, option.stderr
    assert "100000 is not in the range 1<=x<=64" in option.stderr
    assert variable.returncode == 1, variable.stderr
    assert variable.stderr.strip().splitlines() == [
        "Error: WEB_CONCURRENCY must be a whole number from 1 to 64, not '100000'"
    ]


async def test_accounts_list_lists_past_an_account_whose_stream_cannot_be_loaded(
    isolated_db: IsolatedDatabase,
) -> None:
    """The projector stops at the bad row, so the account's row is behind its events and the
    listing asked its events: one such account ended the whole listing."""
    for account_id in ("acct_list_fine", "acct_list_unloadable"):
        opened = await ledger(isolated_db.url, "accounts", "open", account_id)
        assert opened.returncode == 0, opened.stderr
    await caught_up(isolated_db.store)
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               VALUES ($1, 2, 'ledger.domain.events:CreditsSpent', '{"amount": "x"}', '\\x00')""",
            account_stream_id("acct_list_unloadable"),
        )
    finally:
        await admin.close()

    listed = await ledger(isolated_db.url, "accounts", "list", "--json")

    assert listed.returncode == 0, listed.stderr
    ids = [json.loads(line)["account_id"] for line in listed.stdout.splitlines()]
    assert ids == ["acct_list_fine", "acct_list_unloadable"]
    [warning] = [line for line in listed.stderr.splitlines() if line.startswith("Warning:")]
    assert warning.startswith("Warning: acct_list_unloadable: listed as its view has it; stream ")
    assert "Traceback" not in listed.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
async def test_a_rebuild_that_meets_an_event_it_cannot_read_says_so_in_one_line(
    isolated_db: IsolatedDatabase, jobs: str
) -> None:
    """A row that does not decode (written by hand) ended a rebuild with two chained
    tracebacks (a worker's, with --jobs 2, inside the error line)."""
    opened = await ledger(isolated_db.url, "accounts", "open", "acct_rebuild_unreadable")
    assert opened.returncode == 0, opened.stderr
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               VALUES ($1, 2, 'ledger.domain.events:CreditsSpent', '{"amount": "x"}', '\\x00')""",
            account_stream_id("acct_rebuild_unreadable"),
        )
        rebuilt = await ledger(isolated_db.url, "projections", "rebuild", "--jobs", jobs)
        left = await admin.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE '%\\_\\_rebuild'"
        )
    finally:
        await admin.close()

    assert rebuilt.returncode == 1, rebuilt.stderr
    [line] = rebuilt.stderr.splitlines()
    assert line.startswith("Error: "), line
    assert "(CreditsSpent, stream " in line
    assert line.endswith("the views are left as they were (see `ledger audit verify`)"), line
    assert left == []


async def test_reset_month_resets_the_other_accounts_past_one_whose_stream_cannot_be_loaded(
    isolated_db: IsolatedDatabase,
) -> None:
    """The first account whose stream did not load ended the run: every account after it
    kept last month's allowance until someone found why."""
    for account_id in ("acct_reset_a_unloadable", "acct_reset_b_fine"):
        opened = await ledger(isolated_db.url, "accounts", "open", account_id)
        assert opened.returncode == 0, opened.stderr
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               VALUES ($1, 2, 'ledger.domain.events:CreditsSpent', '{"amount": "x"}', '\\x00')""",
            account_stream_id("acct_reset_a_unloadable"),
        )
    finally:
        await admin.close()

    run = await ledger(isolated_db.url, "reset-month", "--period", "2099-01", "--yes")

    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout.strip() == "reset 1 account; 0 already reset for this period"
    said = run.stderr.strip().splitlines()
    assert said[0].startswith("not reset: acct_reset_a_unloadable: stream "), said
    assert said[-1] == (
        "Error: 1 account could not be loaded and was not reset (see `ledger audit verify`)"
    )
    events = await stream_events(isolated_db.store, account_stream_id("acct_reset_b_fine"))
    assert events[-1][0] == "MonthlyAllowanceReset"


_SURPRISE = """
import sys
from api.cli import main
from api.cli_support import plural

@main.command("surprise")
def surprise() -> None:
    plural(None, "account")  # a bug: a count that is None

@main.group("nested")
def nested() -> None:
    pass

@nested.command("chatty")
def chatty() -> None:
    import logging

    logging.getLogger("ledger").info("an info line")
    logging.getLogger("ledger").debug("a debug line")

main(sys.argv[1:], prog_name="ledger")
"""


def _run_surprise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (the test's own script)
        [sys.executable, "-c", _SURPRISE, *args],
        env={**os.environ, "LEDGER_LOG_FORMAT": "text"},
        cwd=cli.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [["surprise"], ["-v", "surprise"], ["surprise", "-v"]],
    ids=["quiet", "-v before the command", "-v after it"],
)
async def test_an_error_nobody_foresaw_is_one_line_and_its_traceback_comes_with_v(
    args: list[str],
) -> None:
    """Any error but the database's printed a traceback (a bug, or a state nobody foresaw):
    now one line with its type, message and place; ``-v`` logs the traceback too, before
    the command's name or after it (it was "No such option: -v" there)."""
    verbose = "-v" in args
    ran = await asyncio.to_thread(_run_surprise, *args)

    assert ran.returncode == 1, ran.stderr
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "Error: unexpected error: TypeError: unsupported format string passed to "
        "NoneType.__format__ (at api/cli_support.py:"
    ), last
    if verbose:
        assert "Traceback" in ran.stderr
        assert "logs its traceback" not in last
    else:
        assert ran.stderr.strip().splitlines() == [last]
        assert last.endswith("(`ledger -v ...` logs its traceback)")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["nested", "chatty"], []),
        (["-v", "nested", "chatty"], ["an info line"]),
        (["nested", "chatty", "-v"], ["an info line"]),
        (["-vv", "nested", "chatty"], ["an info line", "a debug line"]),
        (["nested", "-v", "chatty", "-v"], ["an info line", "a debug line"]),
        (["nested", "chatty", "--verbose", "--verbose"], ["an info line", "a debug line"]),
    ],
    ids=lambda value: " ".join(value) or "nothing",
)
async def test_v_logs_info_and_vv_debug_wherever_they_stand(
    args: list[str], said: list[str]
) -> None:
    """No flag reached DEBUG, where the background loops' tracebacks go."""
    ran = await asyncio.to_thread(_run_surprise, *args)

    assert ran.returncode == 0, ran.stderr
    assert [line.split(": ", 1)[1] for line in ran.stderr.splitlines()] == said


def test_the_projector_in_production_needs_the_database_alone(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    """`ledger project` asked production for Stripe's secret key and webhook secret, the page
    key and a metrics port, none of which it uses: its host had to hold the service's
    secrets (docker-compose.yml's projector and make cluster's now get the database alone)."""
    log = tmp_path / "projector.log"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LEDGER_ENV": "production",
        "DATABASE_URL": isolated_db.url,
        "LEDGER_DATA_DIR": str(tmp_path / "data"),
    }
    with log.open("w") as output:
        projector = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "project"],
            env=env,
            cwd=cli.ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "projector started" not in log.read_text() and projector.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        projector.send_signal(signal.SIGTERM)
        code = projector.wait(60)
    finally:
        projector.kill()
        projector.wait()

    said = log.read_text()
    assert code == 0, said
    assert "projector started" in said
    assert "LEDGER_ENV=production needs" not in said


async def test_a_database_url_that_names_no_database_is_refused_before_anything_is_set_up(
    postgres_server_url: str,
) -> None:
    """Without a database PostgreSQL takes the user's name: `ledger accounts list` with
    postgresql://postgres@host:5432 set the ledger up in the server's own `postgres`
    database, then said "database "ledger_service" does not exist" (the service's role has
    another name). A role and a database of one name stand in for postgres here."""
    name = f"ledger_test_{os.urandom(4).hex()}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN CREATEROLE")
        await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
        nameless = urlunsplit(urlsplit(as_role(postgres_server_url, name))._replace(path=""))
        listed = await ledger(nameless, "accounts", "list")
        checked = await ledger(nameless, "config", "check")
        set_up = await ledger(NOTHING_LISTENS, "db", "setup", "--admin-url", f"{nameless}/")
        inside = await asyncpg.connect(_with_database(postgres_server_url, name))
        try:
            tables = await inside.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await inside.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()

    assert listed.returncode == 1, listed.stderr
    assert listed.stderr == (
        "Error: DATABASE_URL names no database: end it with one, as in "
        "postgresql://user@host:5432/ledger\n"
    )
    assert checked.returncode == 1, checked.stderr
    assert "problem: DATABASE_URL names no database: end it with one" in checked.stderr
    assert set_up.returncode == 1, set_up.stderr
    assert set_up.stderr.startswith("Error: --admin-url names no database: "), set_up.stderr
    assert tables == 0


_REBUILD_THEN_SAY_WHAT_IT_IMPORTED = """
import sys
from api.cli import main
try:
    main(["projections", "rebuild", "--jobs", "1"], prog_name="ledger")
except SystemExit as end:
    print(end.code, sorted(m for m in sys.modules if m == "litestar" or m == "api.app"))
"""


async def test_a_rebuild_starts_without_the_web_stack(isolated_db: IsolatedDatabase) -> None:
    """`projections rebuild` opened the service's parts to reach the database: Litestar and
    the app imported (~0.4 s of CPU) before its workers started, none of them used."""
    opened = await ledger(isolated_db.url, "accounts", "open", "acct_rebuild_light")
    assert opened.returncode == 0, opened.stderr

    rebuilt = await python_script(isolated_db.url, _REBUILD_THEN_SAY_WHAT_IT_IMPORTED)

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.splitlines()[-1] == "0 []", rebuilt.stdout
    assert "rebuilt balances up to position" in rebuilt.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["grants", "create", "acct_light", "5"],
        ["tokens", "create", "--scope", "credits", "--account", "acct_light"],
        ["accounts", "list"],
    ],
    ids=["grants create", "tokens create", "accounts list"],
)
async def test_the_operators_commands_start_without_the_web_stack(
    isolated_db: IsolatedDatabase, command: list[str]
) -> None:
    """Every command on the service's parts opened them through api.app: Litestar, the
    routes and the Stripe SDK imported (~0.3-0.5 s of CPU a command), none of them used."""
    opened = await ledger(isolated_db.url, "accounts", "open", "acct_light")
    assert opened.returncode == 0, opened.stderr

    ran = await python_script(isolated_db.url, cli.COMMAND_THEN_SAY_WHAT_IT_IMPORTED, *command)
    code, imported = cli.exit_code_and_modules(ran.stdout)

    assert ran.returncode == 0, ran.stderr
    assert code == "0", ran.stdout
    assert [m for m in imported if m in ("litestar", "api.app", "stripe")] == [], ran.stdout

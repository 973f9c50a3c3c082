"""``ledger db setup`` (a deployment's migrate step) and ``ledger serve`` with METRICS_PORT,
each run as an operator runs it: a process of its own."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.database import as_role, describe
from ledger.store.migrate import SERVICE_ROLE, available_migrations, set_up
from ledger.store.scram import scram_sha_256
from tests.conftest import fresh_database
from tests.support.cli import ROOT
from tests.support.servers import bind_free_port


async def db_setup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``ledger db setup`` with only ``env`` for the database (no DATABASE_URL of the suite's)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "db", "setup", *args],
        env={**base, "LEDGER_ENV": "production", **env},  # it needs no other setting
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_db_setup_makes_the_roles_applies_everything_and_sets_the_service_password(
    postgres_server_url: str,
) -> None:
    async with fresh_database(postgres_server_url) as url:
        first = await db_setup(
            {"DATABASE_ADMIN_URL": url, "LEDGER_SERVICE_PASSWORD": "not-in-the-log"}
        )
        admin = await asyncpg.connect(url)
        try:
            has_password = await admin.fetchval(
                "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1", SERVICE_ROLE
            )
            # ledger_service is a role of the whole server: leave it as the suite found it.
            await admin.execute(f"ALTER ROLE {SERVICE_ROLE} PASSWORD NULL")
            applied = await admin.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await admin.close()
        again = await db_setup({"DATABASE_URL": url})  # DATABASE_URL does as well
        as_service = await db_setup({"DATABASE_ADMIN_URL": as_role(url, SERVICE_ROLE)})

    assert first.returncode == 0, first.stderr
    assert "set up; applied 0001_event_store.sql" in first.stdout
    assert "ledger_service's password set" in first.stdout
    assert "not-in-the-log" not in first.stdout + first.stderr
    assert has_password
    assert applied == len(available_migrations())
    assert again.returncode == 0, again.stderr
    assert "no migration was pending" in again.stdout
    assert as_service.returncode == 1
    assert "may not create roles" in as_service.stderr


async def test_db_setup_in_production_refuses_to_set_up_the_embedded_postgresql(
    tmp_path: Path,
) -> None:
    """A migrate step whose URL went missing set up a database of its own under the data
    folder and said so with exit 0, while the service it ran for refused to start."""
    refused = await db_setup({"LEDGER_DATA_DIR": str(tmp_path), "DATABASE_URL": " "})

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: LEDGER_ENV=production needs DATABASE_ADMIN_URL, DATABASE_URL or --admin-url: "
        "the embedded PostgreSQL is for development"
    )
    assert not (tmp_path / "pg").exists()


async def test_db_setup_reads_the_urls_as_every_other_command_does(
    postgres_server_url: str,
) -> None:
    """Blanks around DATABASE_URL (a secrets file's newline), or a DATABASE_ADMIN_URL of
    blanks: `ledger serve` took them, the migrate step failed or split its line."""
    async with fresh_database(postgres_server_url) as url:
        padded = await db_setup({"DATABASE_ADMIN_URL": " ", "DATABASE_URL": f" {url}\n"})

    assert padded.returncode == 0, padded.stderr
    [line] = padded.stdout.splitlines()
    assert line.startswith(f"database {describe(url)} set up; applied 0001_event_store.sql"), line


class Recording:
    """A connection that keeps the text and arguments of every statement sent through it."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.connection, name)
        if name not in ("execute", "fetch", "fetchrow", "fetchval"):
            return attribute

        async def sent(query: str, *args: Any, **kwargs: Any) -> Any:
            self.sent.append(" ".join([query, *map(str, args)]))
            return await attribute(query, *args, **kwargs)

        return sent


async def test_the_service_password_never_reaches_the_server(postgres_server_url: str) -> None:
    """`ALTER ROLE … PASSWORD 'it'` went in the clear: the server's log has it wherever
    log_statement takes DDL (an operations review). Now only its SCRAM verifier goes."""
    password = "never-in-a-server-log"
    async with fresh_database(postgres_server_url) as url:
        connection = await asyncpg.connect(url)
        recording = Recording(connection)
        try:
            await set_up(recording, service_password=password)  # type: ignore[arg-type]
            stored = await connection.fetchval(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1", SERVICE_ROLE
            )
        finally:
            # ledger_service is a role of the whole server: leave it as the suite found it.
            await connection.execute(f"ALTER ROLE {SERVICE_ROLE} PASSWORD NULL")
            await connection.close()

    assert not [statement for statement in recording.sent if password in statement]
    assert any(stored in statement for statement in recording.sent)
    assert stored.startswith("SCRAM-SHA-256$4096:")


@pytest.mark.parametrize(
    "password",
    [
        "service-secret",
        "it's",
        "pässwörd",  # SASLprep: already NFKC
        "\ufb01 \u2168",  # NFKC makes "fi IX" of them
        "\u00a0a\u200bé\u00ad",  # spaces, and what maps to nothing
        "\u00ad\u034f",  # nothing left after mapping: the password as it is
        "\U000e0001xé",  # a prohibited code point: the password as it is
        "a\u0627",  # mixed directions: the password as it is
    ],
)
async def test_the_verifier_is_the_one_postgresql_makes_of_the_password(
    postgres_server_url: str, password: str
) -> None:
    """The keys made here must be the server's own, or ledger_service could not log in."""
    role = f"ledger_test_scram_{os.urandom(4).hex()}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f"CREATE ROLE {role}")
        await admin.execute("SET password_encryption = 'scram-sha-256'")
        literal = "'" + password.replace("'", "''") + "'"
        await admin.execute(f"ALTER ROLE {role} PASSWORD {literal}")
        stored = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
    iterations, salt = stored.split("$")[1].split(":")

    made = scram_sha_256(password, salt=base64.b64decode(salt), iterations=int(iterations))

    assert made == stored


async def test_serve_answers_metrics_on_its_own_port_and_not_on_the_apis(
    database_url: str, tmp_path: Path
) -> None:
    api_port, metrics_port = (bind_free_port() for _ in range(2))
    ports = api_port.getsockname()[1], metrics_port.getsockname()[1]
    api_port.close()
    metrics_port.close()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(ports[0]),
        "METRICS_PORT": str(ports[1]),
        "STRIPE_SECRET_KEY": "sk_test_serve",
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "STRIPE_WEBHOOK_SECRET": "whsec_serve",
        "LEDGER_DATA_DIR": str(tmp_path),
        "LEDGER_ENV": "development",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: ASYNC220 (stopped below, in finally)
            [sys.executable, "-m", "api.cli", "serve", "--no-projector"],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if (await http.get(f"http://127.0.0.1:{ports[0]}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "ledger serve did not start"
                await asyncio.sleep(0.1)
            on_api = await http.get(f"http://127.0.0.1:{ports[0]}/metrics")
            on_its_port = await http.get(f"http://127.0.0.1:{ports[1]}/metrics")
            api_on_metrics_port = await http.get(f"http://127.0.0.1:{ports[1]}/readyz")
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)

    assert on_api.status_code == 404
    assert on_its_port.status_code == 200
    assert "ledger_process_start_time_seconds" in on_its_port.text
    assert api_on_metrics_port.status_code == 404
    assert process.returncode == 0

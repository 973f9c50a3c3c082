"""The operator's commands, run as an operator runs them, on a database of their own.

``accounts show|list``, ``tokens list`` (with when each token was last used),
``projections status|rebuild`` (one set of view names), ``webhooks retry`` with
the id as printed, progress bars only on a terminal, and ``make run``'s first
words.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from api.access.tokens import Scope, TokenService
from ledger.commands import GrantCredits, PlaceHold, SpendCredits
from projections.names import VIEW_NAMES
from projections.runner import all_projections
from tests.conftest import IsolatedDatabase
from tests.support.cli import ROOT, ledger, run_on_a_terminal
from tests.support.events import caught_up
from tests.support.ledger import open_account


async def accounts_with_spends(database: IsolatedDatabase, count: int, first: int = 0) -> None:
    books = database.ledger()
    for n in range(first, first + count):
        await open_account(books, f"acct_{n}", 100 * (n + 1))
        await books.execute(
            SpendCredits(account_id=f"acct_{n}", amount=10, reason="work", idempotency_key=f"k{n}")
        )
    await books.uow.committer.stop()


def test_one_set_of_view_names_is_served_listed_and_rebuilt() -> None:
    assert [p.name for p in all_projections()] == list(VIEW_NAMES)


async def test_accounts_show_reads_the_account_and_its_latest_purchases(
    isolated_db: IsolatedDatabase,
) -> None:
    await accounts_with_spends(isolated_db, 2)

    shown = await ledger(isolated_db.url, "accounts", "show", "acct_1")
    as_json = await ledger(isolated_db.url, "accounts", "show", "acct_1", "--json")
    missing = await ledger(isolated_db.url, "accounts", "show", "acct_nope")

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["account", "acct_1"]
    assert "balance            190" in lines
    assert "  allowance        190 of 200 left" in lines
    assert "  grants           0 in 0 active grants" in lines
    assert "held               0 in 0 open holds" in lines
    assert "events             2" in lines
    assert "purchases          none" in lines
    report = json.loads(as_json.stdout)
    assert (report["balance"], report["monthly_allowance"], report["events"]) == (190, 200, 2)
    assert missing.returncode == 1
    assert "no account acct_nope" in missing.stderr


async def test_accounts_show_counts_no_grant_past_its_expiry(isolated_db: IsolatedDatabase) -> None:
    """As every balance read: a grant past its expiry, its expiry not recorded yet (no sweeper
    runs here), was shown in the grants, the balance and what is available."""
    real = datetime.now(UTC)
    books = isolated_db.ledger(clock=lambda: real - timedelta(hours=1))
    await open_account(books, "acct_lapsed", 0)
    for key, expires_at in (("g1", real - timedelta(minutes=30)), ("g2", None)):
        await books.execute(
            GrantCredits(
                account_id="acct_lapsed",
                amount=100 if key == "g1" else 40,
                priority=50,
                expires_at=expires_at,
                reason="",
                idempotency_key=key,
            )
        )
    await books.uow.committer.stop()

    shown = await ledger(isolated_db.url, "accounts", "show", "acct_lapsed", "--json")

    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert (report["granted"], report["active_grants"], report["available"]) == (40, 1, 40)
    assert report["events"] == 3  # its expiry is not an event yet


async def test_accounts_list_counts_no_hold_or_grant_past_its_expiry(
    isolated_db: IsolatedDatabase,
) -> None:
    """As ``accounts show`` and every balance read: the list showed the view's row, which
    counts a grant past its expiry in the grants, the balance and what is available, and a
    hold past its expiry in what is held, until the sweeper records them (none runs here)."""
    real = datetime.now(UTC)
    books = isolated_db.ledger(clock=lambda: real - timedelta(hours=1))
    await open_account(books, "acct_due", 100)
    await open_account(books, "acct_fine", 100)
    await books.execute(
        GrantCredits(
            account_id="acct_due",
            amount=100,
            priority=50,
            expires_at=real - timedelta(minutes=30),
            reason="",
            idempotency_key="g1",
        )
    )
    await books.execute(
        PlaceHold(
            account_id="acct_due",
            amount=30,
            expires_in_seconds=60,
            reason="",
            idempotency_key="h1",
        )
    )
    await books.uow.committer.stop()
    await caught_up(isolated_db.store)

    listed = await ledger(isolated_db.url, "accounts", "list", "--json")

    assert listed.returncode == 0, listed.stderr
    shown = {
        row["account_id"]: (row["granted"], row["held"], row["balance"], row["available"])
        for row in map(json.loads, listed.stdout.splitlines())
    }
    assert shown == {"acct_due": (0, 0, 100, 100), "acct_fine": (0, 0, 100, 100)}


async def test_accounts_list_pages_through_the_balances_view_and_says_when_it_is_behind(
    isolated_db: IsolatedDatabase,
) -> None:
    await accounts_with_spends(isolated_db, 3)
    await caught_up(isolated_db.store)

    listed = await ledger(isolated_db.url, "accounts", "list")
    first_page = await ledger(isolated_db.url, "accounts", "list", "--limit", "2")
    second_page = await ledger(isolated_db.url, "accounts", "list", "--after", "acct_1")
    await accounts_with_spends(isolated_db, 1, first=3)  # the view has not seen acct_3 yet
    behind = await ledger(isolated_db.url, "accounts", "list", "--json")

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == [
        "ACCOUNT",
        "BALANCE",
        "ALLOWANCE",
        "LEFT",
        "GRANTS",
        "TOP-UPS",
        "HELD",
        "PERIOD",
    ]
    assert listed.stdout.splitlines()[1].split()[:5] == ["acct_0", "90", "90", "/", "100"]
    assert listed.stderr.strip() == "3 accounts"
    assert [line.split()[0] for line in first_page.stdout.splitlines()[1:]] == [
        "acct_0",
        "acct_1",
    ]
    assert first_page.stderr.strip() == "2 accounts; more after it: --after acct_1"
    assert [line.split()[0] for line in second_page.stdout.splitlines()[1:]] == ["acct_2"]
    assert second_page.stderr.startswith("1 account\n")
    assert [json.loads(line)["account_id"] for line in behind.stdout.splitlines()] == [
        "acct_0",
        "acct_1",
        "acct_2",
    ]
    assert "the balances view is 2 events behind the store" in behind.stderr


async def test_projections_status_gives_each_views_position_and_lag(
    isolated_db: IsolatedDatabase,
) -> None:
    await accounts_with_spends(isolated_db, 2)
    await caught_up(isolated_db.store, projections=all_projections()[:1])  # only balances
    head = await isolated_db.store.head_position()

    status = await ledger(isolated_db.url, "projections", "status")
    as_json = await ledger(isolated_db.url, "projections", "status", "--json")

    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == f"event store at position {head}"
    assert lines[1].split() == ["VIEW", "POSITION", "BEHIND", "LAG", "UPDATED"]
    assert [line.split()[0] for line in lines[2:]] == list(VIEW_NAMES)
    assert lines[2].split()[1:4] == [str(head), "0", "events"]
    assert lines[3].split()[1:4] == ["0", str(head), "events"]
    # LAG as a person reads it: "0 s" caught up; the purchases view's events a moment old.
    assert lines[2].split()[4:6] == ["0", "s"]
    assert re.search(r"events  +(< 0\.1 s|\d\.\d s|\d+ s|\d+ min( \d+ s)?)  +never$", lines[3])
    views = {row["view"]: row for row in map(json.loads, as_json.stdout.splitlines())}
    assert views["balances"]["behind"] == 0
    assert views["balances"]["lag_seconds"] == 0
    assert views["purchases"]["behind"] == head
    assert views["purchases"]["lag_seconds"] > 0


async def test_tokens_list_shows_who_and_when_last_used_never_the_secret(
    isolated_db: IsolatedDatabase,
) -> None:
    await accounts_with_spends(isolated_db, 1)
    tokens = TokenService(isolated_db.pool)
    customer = await tokens.issue(Scope.CREDITS, account_id="acct_0")
    service = await tokens.issue(Scope.LEDGER_WRITE, name="billing")
    revoked = await tokens.issue(Scope.LEDGER_AUDIT, name="old auditor")
    await tokens.revoke(revoked.token_id)
    assert await tokens.authenticate(customer.secret) is not None
    await tokens.stop_watching()  # waits for the use to be written

    listed = await ledger(isolated_db.url, "tokens", "list")
    everything = await ledger(isolated_db.url, "tokens", "list", "--all", "--json")

    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert listed.stdout.splitlines()[0].split() == [
        "ID",
        "SCOPE",
        "FOR",
        "CREATED",
        "LAST",
        "USED",
    ]
    assert set(rows) == {customer.token_id, service.token_id}
    assert re.search(
        r"credits\s+account acct_0\s+\S+ \S+Z\s+\d{4}-\d\d-\d\d ", rows[customer.token_id]
    )
    assert rows[service.token_id].rstrip().endswith("never")
    assert "ledger:write  billing" in rows[service.token_id]
    assert listed.stderr.strip() == "2 tokens (live)"
    found = {row["token_id"]: row for row in map(json.loads, everything.stdout.splitlines())}
    assert found[revoked.token_id]["revoked_at"] is not None
    for secret in (customer.secret, service.secret, revoked.secret):
        assert secret not in listed.stdout + everything.stdout
        assert secret.split("_", 2)[2] not in listed.stdout + everything.stdout


async def last_used(pool: asyncpg.Pool, token_id: str) -> object:
    return await pool.fetchval("SELECT last_used_at FROM api_tokens WHERE token_id = $1", token_id)


async def test_a_tokens_use_is_written_at_most_once_a_minute(
    isolated_db: IsolatedDatabase,
) -> None:
    pool = isolated_db.pool
    issued = await TokenService(pool).issue(Scope.LEDGER_WRITE, name="busy")
    first = TokenService(pool)

    assert await first.authenticate(issued.secret) is not None
    await first.stop_watching()
    used = await last_used(pool, issued.token_id)
    for _ in range(20):  # the same process: remembered, nothing written
        await first.authenticate(issued.secret)
    await first.stop_watching()
    other = TokenService(pool)  # another process: the database says "this minute already"
    await other.authenticate(issued.secret)
    await other.stop_watching()
    unchanged = await last_used(pool, issued.token_id)
    await pool.execute(
        "UPDATE api_tokens SET last_used_at = now() - interval '2 minutes' WHERE token_id = $1",
        issued.token_id,
    )
    later = TokenService(pool)
    await later.authenticate(issued.secret)
    await later.stop_watching()

    assert used is not None
    assert unchanged == used
    assert await last_used(pool, issued.token_id) > used  # type: ignore[operator]


async def test_rebuild_all_shows_whole_numbers_to_100_percent_only_on_a_terminal(
    isolated_db: IsolatedDatabase,
) -> None:
    await accounts_with_spends(isolated_db, 30)
    # Positions have gaps (a rolled-back append uses up its numbers): the head is not a count.
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute("SELECT setval('stored_events_notification_id_seq', 100)")
    finally:
        await admin.close()
    await accounts_with_spends(isolated_db, 1, first=30)
    events = await isolated_db.pool.fetchval("SELECT count(*) FROM stored_events")
    assert await isolated_db.store.head_position() > events

    code, on_terminal = await asyncio.to_thread(
        run_on_a_terminal, isolated_db.url, "projections", "rebuild", "all"
    )
    piped = await ledger(isolated_db.url, "projections", "rebuild", "statement", "balances")
    unknown = await ledger(isolated_db.url, "projections", "rebuild", "statement_lines")
    helped = await ledger(isolated_db.url, "projections", "rebuild", "--help")
    listed = await ledger(isolated_db.url, "projections", "--help")

    assert code == 0, on_terminal
    last_bar = [line for line in on_terminal.split("\r") if "%|" in line][-1]
    assert "100%|" in last_bar, on_terminal
    assert f"| {events}/{events} " in last_bar  # whole numbers, not 1.2k
    for name in VIEW_NAMES:
        assert f"rebuilt {name} up to position" in on_terminal
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""  # no bar when nobody watches
    assert piped.stdout.splitlines()[0].startswith("rebuilt balances up to position")
    assert unknown.returncode == 2
    assert "'statement_lines' is not one of 'balances', 'purchases', 'statement'" in unknown.stderr
    names = ", ".join(VIEW_NAMES)
    assert f"NAME is one of: {names}, all." in " ".join(helped.stdout.split())
    assert f"read views: {names}." in " ".join(listed.stdout.split())


async def test_the_audits_lines_count_one_account_as_one(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    """A new ledger's audit said "1 accounts", "1 streams" and "exported 2 events" without
    the thousands' comma the other counts have."""
    await accounts_with_spends(isolated_db, 1)
    key = tmp_path / "key"
    assert (await ledger(isolated_db.url, "audit", "keygen", "--out", str(key))).returncode == 0

    signed = await ledger(
        isolated_db.url, "audit", "checkpoint", "--key", str(key), "-o", str(tmp_path / "cp")
    )
    verified = await ledger(
        isolated_db.url,
        "audit",
        "verify",
        "--jobs",
        "1",
        "--checkpoint",
        str(tmp_path / "cp"),
        "--public-key",
        f"{key}.pub",
    )
    exported = await ledger(isolated_db.url, "audit", "export", "acct_0", "-o", str(tmp_path / "x"))

    assert signed.returncode == 0, signed.stderr
    assert ": 2 events, 1 stream, Merkle root " in signed.stderr
    assert verified.returncode == 0, verified.stdout
    assert "events/s): 1 account, 0 checkout sessions, 0 snapshots" in verified.stdout
    assert ", 2 events, 1 stream, taken " in verified.stdout
    assert exported.stderr == "exported 2 events of acct_0\n"


async def test_audit_export_to_a_file_shows_a_bar_to_100_percent_only_on_a_terminal(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    """A large account's export said nothing until it ended; a bar counts its events now,
    unless the lines themselves go to the terminal."""
    books = isolated_db.ledger()
    await open_account(books, "acct_big", 5000)
    for n in range(1_200):
        await books.execute(
            SpendCredits(account_id="acct_big", amount=1, reason="work", idempotency_key=f"k{n}")
        )
    await books.uow.committer.stop()
    events = 1 + 1_200

    code, on_terminal = await asyncio.to_thread(
        run_on_a_terminal,
        isolated_db.url,
        "audit",
        "export",
        "acct_big",
        "--format",
        "csv",
        "-o",
        str(tmp_path / "big.csv"),
    )
    lines_code, lines_on_terminal = await asyncio.to_thread(
        run_on_a_terminal, isolated_db.url, "audit", "export", "acct_big"
    )

    assert code == 0, on_terminal
    last_bar = [line for line in on_terminal.split("\r") if "%|" in line][-1]
    assert "100%|" in last_bar, on_terminal
    assert f"| {events}/{events} " in last_bar
    assert f"exported {events:,} events of acct_big" in on_terminal
    assert len((tmp_path / "big.csv").read_text().splitlines()) == 1 + events
    assert lines_code == 0
    assert "%|" not in lines_on_terminal
    assert lines_on_terminal.count('"type":"CreditsSpent"') == 1_200


async def test_webhooks_deliveries_writes_times_as_every_other_command_does(
    isolated_db: IsolatedDatabase,
) -> None:
    """Its times ended in "+0000" where tokens list, accounts show and projections status
    write "Z"."""
    await isolated_db.pool.execute(
        """INSERT INTO webhook_endpoints (endpoint_id, url, event_types, secret)
           VALUES ('we_1', 'http://127.0.0.1:9/hook', '{credits.spent}', 'whsec_x')"""
    )
    delivery_id = await isolated_db.pool.fetchval(
        """INSERT INTO webhook_deliveries (notification_id, event_type, endpoint_id, account_id,
                                           position, payload, status, attempts, next_attempt_at)
           VALUES ('ntf_1', 'credits.spent', 'we_1', 'acct_0', 1, '{}', 'pending', 1,
                   '2026-12-05 10:05:00+00')
           RETURNING delivery_id"""
    )
    await isolated_db.pool.execute(
        """INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, error)
           VALUES ($1, 1, '2026-12-05 10:00:00+00', 12, 'ConnectError')""",
        delivery_id,
    )

    listed = await ledger(isolated_db.url, "webhooks", "deliveries")

    assert listed.returncode == 0, listed.stderr
    assert "next attempt 2026-12-05 10:05:00Z" in listed.stdout
    assert "#1  2026-12-05 10:00:00Z  12 ms  ConnectError" in listed.stdout
    assert "+0000" not in listed.stdout


async def test_webhooks_retry_takes_the_delivery_id_as_printed(
    isolated_db: IsolatedDatabase,
) -> None:
    await isolated_db.pool.execute(
        """INSERT INTO webhook_endpoints (endpoint_id, url, event_types, secret)
           VALUES ('we_1', 'http://127.0.0.1:9/hook', '{credits.spent}', 'whsec_x')"""
    )
    delivery_id = await isolated_db.pool.fetchval(
        """INSERT INTO webhook_deliveries (notification_id, event_type, endpoint_id, account_id,
                                           position, payload, status, attempts)
           VALUES ('ntf_1', 'credits.spent', 'we_1', 'acct_0', 1, '{}', 'failed', 8)
           RETURNING delivery_id"""
    )

    listed = await ledger(isolated_db.url, "webhooks", "deliveries")
    printed = listed.stdout.split()[0]
    retried = await ledger(isolated_db.url, "webhooks", "retry", printed)
    upper = await ledger(isolated_db.url, "webhooks", "retry", printed.upper())
    missing = await ledger(isolated_db.url, "webhooks", "retry", "dlv_99999999")
    nonsense = await ledger(isolated_db.url, "webhooks", "retry", "delivery-12")

    assert printed == f"dlv_{delivery_id}"
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"dlv_{delivery_id} (ntf_1 to we_1) is due now")
    assert upper.returncode == 0, upper.stderr
    assert missing.returncode == 1
    assert "no delivery dlv_99999999" in missing.stderr
    assert nonsense.returncode == 2
    assert nonsense.stderr.splitlines()[-1] == (
        "Error: Invalid value for 'DELIVERY_ID': 'delivery-12' is not a delivery id "
        "(dlv_123 or 123)"
    )


def test_the_first_make_run_says_what_pip_does_and_how_long_it_takes() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "-B", ".venv/.run-installed", ".venv/.dev-installed"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    said = dry_run.stdout
    assert 'echo "creating the virtualenv .venv' in said
    assert (
        "pip: installing the ledger and its dependencies into .venv (pinned by "
        "constraints.txt); the first time takes about 30-60 s, later runs skip this" in said
    )
    assert "the first time takes about 1-3 minutes" in said
    pip = "python -m pip install --quiet --disable-pip-version-check -c constraints.txt"
    assert f"{pip} -e . && echo" in said
    assert f"{pip} -e '.[test,lint]' -e ./clients/python && echo" in said
    assert 'echo "pip: done in' in said


OLD_PYTHON = '#!/bin/sh\ncase "$1" in -V) echo "Python 3.10.13";; *) exit 1;; esac\n'
"""A python3 as Ubuntu 22.04's: 3.10, which pyproject.toml's requires-python refuses."""


def test_make_run_refuses_a_python_older_than_3_11_before_pip_does(tmp_path: Path) -> None:
    """pip refused it after a minute of resolving, as "ResolutionImpossible", and the
    virtualenv it left was reused by the next run, whatever PYTHON said (a newcomer's review)."""
    old = tmp_path / "python3.10"
    old.write_text(OLD_PYTHON)
    old.chmod(0o755)
    venv = tmp_path / "venv"

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        target = f"{venv}/.run-installed"
        command = ["make", "--no-print-directory", f"VENV={venv}", *args, target]
        return subprocess.run(  # noqa: S603 (the arguments are this test's own)
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    fresh = make(f"PYTHON={old}")
    assert fresh.returncode == 2
    assert fresh.stderr.splitlines()[0] == (
        f"{old} is Python 3.10.13; the ledger needs Python 3.11 or newer: "
        "make run PYTHON=python3.11 (or newer)"
    )
    assert not venv.exists()

    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(OLD_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    kept = make()
    assert kept.returncode == 2
    assert kept.stderr.splitlines()[0] == (
        f"{venv} is Python 3.10.13; the ledger needs Python 3.11 or newer: remove it "
        "(make clean) and run again, with PYTHON=python3.11 (or newer) if python3 is older"
    )
    assert "pip:" not in kept.stdout


NO_ENSUREPIP = """#!/bin/sh
if [ "$1 $2" = "-m venv" ]; then
  "{python}" -m venv --without-pip "$3"
  echo "The virtual environment was not created successfully because ensurepip is not
available.  On Debian/Ubuntu systems, you need to install the python3-venv
package using the following command." >&2
  exit 1
fi
exec "{python}" "$@"
"""
"""A python3 as Debian's without python3-venv: ``-m venv`` makes the virtualenv and its
python, then finds no ensurepip to install pip with."""


def test_a_virtualenv_python_could_not_finish_is_removed_for_the_next_run(tmp_path: Path) -> None:
    """It was left half made, and taken as made by the next run once python3-venv was
    installed: "No module named pip" (a newcomer's review)."""
    python = tmp_path / "python3"
    python.write_text(NO_ENSUREPIP.format(python=sys.executable))
    python.chmod(0o755)
    venv = tmp_path / "venv"

    command = ["make", "--no-print-directory", f"VENV={venv}", f"PYTHON={python}"]
    failed = subprocess.run(  # noqa: S603 (the arguments are this test's own)
        [*command, f"{venv}/bin/python"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert failed.returncode == 2
    assert "ensurepip is not\navailable" in failed.stderr
    assert f"removed the half-made {venv}: run make again once that is fixed" in failed.stderr
    assert not venv.exists()

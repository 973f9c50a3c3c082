"""``ledger audit verify --jobs``: the streams split over processes, one report."""

from __future__ import annotations

import json

import asyncpg
import msgspec

from audit.checkpoint import CheckpointAudit, take_checkpoint
from audit.verify import Report, verify
from ledger.commands import SpendCredits
from ledger.domain.ids import account_stream_id
from tests.conftest import IsolatedDatabase, verify_with_jobs
from tests.integration.test_audit import build_history, tamper
from tests.integration.test_audit_adjustments_and_snapshots import refunds_and_disputes
from tests.integration.test_checkpoints import KEY
from tests.integration.test_grants_views_and_audit import grants_history
from tests.integration.test_holds_audit import holds_history
from tests.support import cli
from tests.support.events import caught_up
from tests.support.ledger import open_account


async def part_of(db: IsolatedDatabase, account_id: str, parts: int) -> int:
    """Which of ``parts`` workers replays the account's stream (the audit's own hash)."""
    return await db.pool.fetchval(
        "SELECT (uuid_hash($1::uuid) & 2147483647) % $2::int", account_stream_id(account_id), parts
    )


def without_timing(report: Report) -> dict[str, object]:
    figures = msgspec.to_builtins(report)
    del figures["seconds"], figures["events_per_second"], figures["jobs"]
    return figures


async def test_a_changed_event_in_the_second_workers_streams_is_reported(
    isolated_db: IsolatedDatabase, postgres_server_url: str
) -> None:
    books = isolated_db.ledger()
    accounts = [f"acct_part_{n}" for n in range(12)]
    for account_id in accounts:
        await open_account(books, account_id, 1000)
        await books.execute(
            SpendCredits(account_id=account_id, amount=95, reason="w", idempotency_key=account_id)
        )
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()
    second = [a for a in accounts if await part_of(isolated_db, a, 2) == 1]
    assert second, "no account's stream falls to the second worker"
    assert len(second) < len(accounts), "every account's stream falls to the second worker"
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET state = convert_to(
               replace(convert_from(state, 'UTF8'), '"amount":95', '"amount":94'), 'UTF8')
           WHERE originator_id = $1 AND originator_version = 2""",
        account_stream_id(second[0]),
    )

    report = await verify_with_jobs(2, postgres_server_url)(isolated_db.pool)

    [finding] = [f for f in report.findings if f.kind == "hash-mismatch"]
    assert (finding.account_id, finding.version) == (second[0], 2)
    assert report.events == 2 * len(accounts)
    assert report.accounts == len(accounts)


async def test_two_jobs_report_exactly_what_one_does(
    isolated_db: IsolatedDatabase, postgres_server_url: str
) -> None:
    """Accounts, purchases, refunds, disputes, holds, grants, a checkpoint, and findings."""
    await build_history(isolated_db)
    await refunds_and_disputes(isolated_db)
    books = await holds_history(isolated_db)
    await books.uow.committer.stop()
    books, _ = await grants_history(isolated_db)
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()
    checkpoint = await take_checkpoint(isolated_db.pool, KEY)
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET state = convert_to(
               replace(convert_from(state, 'UTF8'), '"amount":95', '"amount":94'), 'UTF8')
           WHERE originator_id = $1 AND originator_version = 9""",
        account_stream_id("acct_bob"),
    )
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute("UPDATE balances SET topup_balance = topup_balance + 1")
    finally:
        await admin.close()

    def audits() -> list[CheckpointAudit]:
        return [CheckpointAudit(checkpoint, [KEY.public_key()])]

    one = await verify(isolated_db.pool, checkpoints=audits())
    two = await verify_with_jobs(2, postgres_server_url)(isolated_db.pool, checkpoints=audits())
    three = await verify_with_jobs(3, postgres_server_url)(isolated_db.pool, checkpoints=audits())

    assert {"hash-mismatch", "balances-view", "checkpoint-head"} <= {f.kind for f in one.findings}
    assert one.accounts >= 5
    assert one.checkout_sessions >= 4
    assert without_timing(two) == without_timing(one)
    assert without_timing(three) == without_timing(one)


async def test_a_small_store_is_verified_in_one_process_unless_jobs_asks_for_more(
    isolated_db: IsolatedDatabase,
) -> None:
    """One process per CPU spent 2.5 of the 2.6 s it took to verify `make run`'s 5 events
    starting processes, and reported 2 events/s."""
    books = isolated_db.ledger()
    await open_account(books, "acct_small", 1000)
    await books.execute(
        SpendCredits(account_id="acct_small", amount=5, reason="w", idempotency_key="small")
    )
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()

    by_default = await cli.ledger(isolated_db.url, "audit", "verify", "--json")
    told = await cli.ledger(isolated_db.url, "audit", "verify", "--json", "--jobs", "2")

    assert by_default.returncode == 0, by_default.stderr
    assert told.returncode == 0, told.stderr
    assert json.loads(by_default.stdout)["jobs"] == 1
    assert json.loads(told.stdout)["jobs"] == 2
    assert without_timing(msgspec.json.decode(told.stdout, type=Report)) == without_timing(
        msgspec.json.decode(by_default.stdout, type=Report)
    )


async def test_a_worker_imports_what_it_replays_with_and_not_the_command_line(
    isolated_db: IsolatedDatabase,
) -> None:
    """A spawned worker ran the parent's main module again before its part: the command
    line's, every command's module with click, 0.07-0.1 s of its start."""
    books = isolated_db.ledger()
    await open_account(books, "acct_imports", 1000)
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()

    told = await cli.ledger(
        isolated_db.url,
        *("audit", "verify", "--json", "--jobs", "2"),
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )

    assert told.returncode == 0, told.stderr
    assert json.loads(told.stdout)["jobs"] == 2
    assert cli.imported(told.stderr, "audit.stream_replay") == 2  # the command and its worker
    assert cli.imported(told.stderr, "click") == 1  # the command alone

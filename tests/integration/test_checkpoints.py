"""Signed checkpoints catch what the in-database hash chains cannot: a consistent rewrite.

Each test builds a history through the real services on a database of its own,
takes a checkpoint, then changes the store as a superuser could (append-only
trigger off) and runs ``audit verify`` with and without the checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.database import owner_connection
from audit.checkpoint import (
    Checkpoint,
    CheckpointAudit,
    heads_root,
    public_key_hex,
    signed_message,
    take_checkpoint,
)
from audit.verify import Report, verify
from ledger.commands import SpendCredits
from ledger.domain.account import CreditAccount
from ledger.domain.ids import account_stream_id
from ledger.service import Ledger
from ledger.store.commit import write_batch
from projections.rebuild import rebuild_all
from projections.runner import all_projections
from tests.conftest import IsolatedDatabase
from tests.integration.test_audit import build_history, tamper
from tests.support.cli import ledger
from tests.support.events import caught_up
from tests.support.ledger import open_account
from tests.support.waiting import until

# Every audit here runs twice: replayed in this process, and split over two (--jobs 2).
pytestmark = pytest.mark.usefixtures("audit_jobs")

KEY = Ed25519PrivateKey.generate()


def accounts_of(db: IsolatedDatabase) -> Ledger:
    return db.ledger()


async def as_superuser(db: IsolatedDatabase) -> asyncpg.Connection:
    """A connection that can do what the service's role cannot: what a tamperer would use."""
    return await asyncpg.connect(db.url)


async def verify_against(
    db: IsolatedDatabase, checkpoint: Checkpoint, key: Ed25519PrivateKey = KEY
) -> Report:
    return await verify(db.pool, checkpoints=[CheckpointAudit(checkpoint, [key.public_key()])])


def kinds(report: Report) -> list[str]:
    return sorted(f.kind for f in report.findings)


SPEND_OF_60_FOR_100 = (
    '"amount":100,"from_allowance":55,"from_topup":45',
    '"amount":60,"from_allowance":55,"from_topup":5',
)
"""A forgery that keeps a spend's parts adding up to its amount: the replay finds nothing wrong
in it, only a checkpoint taken before it does."""


async def rewrite_stream(admin_url: str, stream: UUID, version: int, old: str, new: str) -> None:
    """Change one event and recompute the hashes after it: a chain that is consistent again."""
    connection = await asyncpg.connect(admin_url)
    try:
        await _rewrite(connection, stream, version, old, new)
    finally:
        await connection.close()


async def _rewrite(
    connection: asyncpg.Connection, stream: UUID, version: int, old: str, new: str
) -> None:
    async with connection.transaction():
        await connection.execute("SET LOCAL session_replication_role = replica")
        changed = await connection.execute(
            """UPDATE stored_events SET state = convert_to(
                   replace(convert_from(state, 'UTF8'), $3, $4), 'UTF8')
               WHERE originator_id = $1 AND originator_version = $2
                 AND position($3 in convert_from(state, 'UTF8')) > 0""",
            stream,
            version,
            old,
            new,
        )
        assert changed == "UPDATE 1"
        last = await connection.fetchval(
            "SELECT max(originator_version) FROM stored_events WHERE originator_id = $1", stream
        )
        for v in range(version, last + 1):  # in order: each uses the hash just written before it
            await connection.execute(
                """UPDATE stored_events e SET hash = event_hash(
                       coalesce((SELECT p.hash FROM stored_events p
                                 WHERE p.originator_id = e.originator_id
                                   AND p.originator_version = e.originator_version - 1),
                                decode(repeat('00', 32), 'hex')),
                       e.originator_id, e.originator_version, e.recorded_at, e.topic, e.state)
                   WHERE e.originator_id = $1 AND e.originator_version = $2""",
                stream,
                v,
            )


async def rebuild_views(db: IsolatedDatabase) -> None:
    """What a careful intruder does next, so that the views agree with the new events."""
    async with owner_connection(db.url) as connection:
        await rebuild_all(connection, all_projections(), lambda *_: None)
    # The rebuild stops at its look's watermark, which can stand short of the last event.
    await caught_up(db.store)


async def checkpoint_of_everything(
    pool: asyncpg.Pool, key: Ed25519PrivateKey = KEY, up_to: int | None = None
) -> Checkpoint:
    """A checkpoint up to the last event (or ``up_to``). One look may still count a
    transaction of another database that ended between the watermark's snapshot and its
    read of the sessions, and the checkpoint stops short: the next look passes it."""
    if up_to is None:
        up_to = await pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM stored_events")
    checkpoints: list[Checkpoint] = []

    async def covering_it() -> bool:
        checkpoints.append(await take_checkpoint(pool, key))
        return checkpoints[-1].position >= up_to

    await until(covering_it, what=f"a checkpoint up to position {up_to}")
    return checkpoints[-1]


async def test_a_checkpoint_of_a_faithful_ledger_verifies_clean(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    report = await verify_against(isolated_db, checkpoint)

    assert report.findings == []
    assert checkpoint.event_count == report.events
    # two accounts and four Checkout sessions (a payment links its intent with a claim)
    assert checkpoint.stream_count == report.streams == 6
    bob = next(h for h in checkpoint.heads if h.stream_id == account_stream_id("acct_bob"))
    assert (bob.version, bytes.fromhex(bob.hash)) == tuple(
        await isolated_db.pool.fetchrow(
            """SELECT originator_version, hash FROM stored_events WHERE originator_id = $1
               ORDER BY originator_version DESC LIMIT 1""",
            bob.stream_id,
        )
    )
    assert [h.stream_id for h in checkpoint.heads] == sorted(h.stream_id for h in checkpoint.heads)


async def test_a_rewritten_stream_with_recomputed_hashes_passes_the_chains_but_not_the_checkpoint(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    bob = account_stream_id("acct_bob")
    await rewrite_stream(isolated_db.url, bob, 14, *SPEND_OF_60_FOR_100)
    await rebuild_views(isolated_db)

    plain = await verify(isolated_db.pool)
    anchored = await verify_against(isolated_db, checkpoint)

    assert plain.findings == []
    [finding] = anchored.findings
    assert finding.kind == "checkpoint-head"
    assert (finding.account_id, finding.version) == ("acct_bob", checkpoint_head(checkpoint, bob))
    assert "the stream was rewritten after the checkpoint" in finding.detail


def checkpoint_head(checkpoint: Checkpoint, stream: UUID) -> int:
    return next(h.version for h in checkpoint.heads if h.stream_id == stream)


async def test_a_changed_event_whose_later_hashes_were_left_alone_breaks_the_chain_to_the_head(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET state = state || ' '::bytea
           WHERE originator_id = $1 AND originator_version = 3""",
        account_stream_id("acct_alice"),
    )

    report = await verify_against(isolated_db, checkpoint)

    assert kinds(report) == ["checkpoint-head", "hash-mismatch"]
    [head] = [f for f in report.findings if f.kind == "checkpoint-head"]
    assert head.account_id == "acct_alice"
    assert "an event before its head was changed" in head.detail


async def test_a_streams_last_event_cut_off_before_the_checkpoint_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    alice = account_stream_id("acct_alice")
    head = checkpoint_head(checkpoint, alice)
    await tamper(
        isolated_db.url,
        "DELETE FROM stored_events WHERE originator_id = $1 AND originator_version = $2",
        alice,
        head,
    )
    await rebuild_views(isolated_db)

    plain = await verify(isolated_db.pool)
    anchored = await verify_against(isolated_db, checkpoint)

    assert [f.kind for f in plain.findings if f.kind in ("hash-mismatch", "version-gap")] == []
    assert kinds(anchored) == sorted([*kinds(plain), "checkpoint-count", "checkpoint-head"])
    [cut] = [f for f in anchored.findings if f.kind == "checkpoint-head"]
    assert (cut.account_id, cut.version) == ("acct_alice", head)
    assert f"only up to version {head - 1}: its last events were cut off" in cut.detail
    [count] = [f for f in anchored.findings if f.kind == "checkpoint-count"]
    assert f"the checkpoint counted {checkpoint.event_count}" in count.detail


async def test_the_last_event_of_the_store_removed_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    await tamper(
        isolated_db.url,
        "DELETE FROM stored_events WHERE notification_id = $1",
        checkpoint.position,
    )

    report = await verify_against(isolated_db, checkpoint)

    assert {"checkpoint-count", "checkpoint-head"} <= set(kinds(report))
    [count] = [f for f in report.findings if f.kind == "checkpoint-count"]
    assert f"the store now ends at position {checkpoint.position - 1}" in count.detail


async def test_an_event_removed_and_written_again_after_the_checkpoint_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    """Same content, same hash, but a later position: the count and the head both show it."""
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    bob = account_stream_id("acct_bob")
    head = checkpoint_head(checkpoint, bob)
    connection = await as_superuser(isolated_db)
    async with connection.transaction():
        await connection.execute("SET LOCAL session_replication_role = replica")
        await connection.execute(
            """WITH gone AS (DELETE FROM stored_events
                             WHERE originator_id = $1 AND originator_version = $2 RETURNING *)
               INSERT INTO stored_events (originator_id, originator_version, topic, state,
                                          recorded_at, hash)
               SELECT originator_id, originator_version, topic, state, recorded_at, hash
               FROM gone""",
            bob,
            head,
        )
    await connection.close()
    await rebuild_views(isolated_db)

    plain = await verify(isolated_db.pool)
    anchored = await verify_against(isolated_db, checkpoint)

    assert plain.findings == []
    assert kinds(anchored) == ["checkpoint-count", "checkpoint-head"]
    [moved] = [f for f in anchored.findings if f.kind == "checkpoint-head"]
    assert "it was removed and written again" in moved.detail


async def test_a_stream_slipped_in_before_the_checkpoints_position_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    await open_account(accounts_of(isolated_db), "acct_mallory", 5000)
    await tamper(
        isolated_db.url,
        """UPDATE stored_events SET notification_id = 0 - notification_id
           WHERE originator_id = $1""",
        account_stream_id("acct_mallory"),
    )

    report = await verify_against(isolated_db, checkpoint)

    assert "checkpoint-count" in kinds(report)
    [slipped] = [f for f in report.findings if f.kind == "checkpoint-head"]
    assert slipped.account_id == "acct_mallory"
    assert "written into the past" in slipped.detail


async def streams_last_events_that_can_trade_places(pool: asyncpg.Pool) -> tuple[int, int]:
    """Positions a < b of two streams' last events where b's stream has nothing between a
    and b: swapped, each stream's events stay in version order and every chain holds."""
    rows = await pool.fetch(
        """SELECT notification_id AS position,
                  lag(notification_id) OVER (PARTITION BY originator_id
                                             ORDER BY originator_version) AS before,
                  originator_version = max(originator_version) OVER (PARTITION BY originator_id)
                      AS last, originator_id
           FROM stored_events ORDER BY notification_id"""
    )
    lasts = [r for r in rows if r["last"]]
    return next(
        (a["position"], b["position"])
        for b in reversed(lasts)
        for a in lasts
        if a["originator_id"] != b["originator_id"]
        and a["position"] < b["position"]
        and (b["before"] or 0) < a["position"]
    )


async def test_events_of_two_streams_that_traded_positions_are_found(
    isolated_db: IsolatedDatabase,
) -> None:
    """The chains hash each event's content, not where it sits in the store's order: an
    insider without the signing key moved events of different streams past each other,
    and every head, hash and count the checkpoint signed stayed as it was."""
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    a, b = await streams_last_events_that_can_trade_places(isolated_db.pool)
    for old, new in ((a, -1), (b, a), (-1, b)):
        await tamper(
            isolated_db.url,
            "UPDATE stored_events SET notification_id = $2 WHERE notification_id = $1",
            old,
            new,
        )
    await rebuild_views(isolated_db)

    plain = await verify(isolated_db.pool)
    anchored = await verify_against(isolated_db, checkpoint)

    assert plain.findings == []
    assert kinds(anchored) == ["checkpoint-head", "checkpoint-head"]
    assert all("events were moved" in f.detail for f in anchored.findings)


async def test_a_version_1_checkpoint_which_signs_no_positions_still_verifies(
    isolated_db: IsolatedDatabase,
) -> None:
    """Files signed before version 2 are kept for years: they are still checked for the
    rest, and verify clean on a faithful store."""
    await build_history(isolated_db)
    taken = await checkpoint_of_everything(isolated_db.pool)
    heads = [msgspec.structs.replace(h, positions=None) for h in taken.heads]
    unsigned = msgspec.structs.replace(
        taken, format_version=1, heads=heads, merkle_root=heads_root(heads).hex()
    )
    version_1 = msgspec.structs.replace(
        unsigned, signature=KEY.sign(signed_message(unsigned)).hex()
    )

    report = await verify_against(isolated_db, version_1)

    assert report.findings == []


async def test_events_appended_after_the_checkpoint_are_fine(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    accounts = accounts_of(isolated_db)
    await open_account(accounts, "acct_carol", 500)
    for k in range(3):
        for account_id, key in (("acct_bob", f"later-{k}"), ("acct_carol", f"carol-{k}")):
            await accounts.execute(
                SpendCredits(account_id=account_id, amount=10, reason="later", idempotency_key=key)
            )
    await caught_up(isolated_db.store)

    report = await verify_against(isolated_db, checkpoint)

    assert report.findings == []
    assert report.events == checkpoint.event_count + 7


async def test_a_checkpoint_never_passes_over_an_append_that_commits_late(
    isolated_db: IsolatedDatabase,
) -> None:
    """A write still open when the checkpoint is taken: neither it nor what follows is covered."""
    await build_history(isolated_db)
    before = await isolated_db.pool.fetchval("SELECT max(notification_id) FROM stored_events")
    books = accounts_of(isolated_db)
    async with isolated_db.pool.acquire() as slow:
        transaction = slow.transaction()
        await transaction.start()
        opened = CreditAccount.open("acct_slow", 10, "2999-01")
        [outcome] = await write_batch(slow, [books.repository.writes([opened], [])])
        outcome.result()
        await open_account(books, "acct_fast", 10)  # commits first, numbered after
        # Up to the last event before the open one, never past it.
        checkpoint = await checkpoint_of_everything(isolated_db.pool, up_to=before)
        await transaction.commit()

    report = await verify_against(isolated_db, checkpoint)

    assert checkpoint.position == before
    assert account_stream_id("acct_fast") not in {h.stream_id for h in checkpoint.heads}
    assert [f for f in report.findings if f.kind.startswith("checkpoint")] == []


async def test_a_checkpoint_file_with_a_changed_head_or_signature_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    first, *rest = checkpoint.heads
    other_head = msgspec.structs.replace(first, version=first.version - 1)
    changed_head = msgspec.structs.replace(checkpoint, heads=[other_head, *rest])
    # Someone without the key recomputes the root to match: the signature still fails.
    rerooted = msgspec.structs.replace(
        changed_head, merkle_root=heads_root(changed_head.heads).hex()
    )
    flipped = bytes.fromhex(checkpoint.signature)
    bad_signature = msgspec.structs.replace(
        checkpoint, signature=(bytes([flipped[0] ^ 1]) + flipped[1:]).hex()
    )
    shifted = msgspec.structs.replace(checkpoint, position=checkpoint.position - 1)

    assert kinds(await verify_against(isolated_db, changed_head)) == [
        "checkpoint-file",
        "checkpoint-head",
    ]
    assert kinds(await verify_against(isolated_db, rerooted)) == [
        "checkpoint-head",
        "checkpoint-signature",
    ]
    assert kinds(await verify_against(isolated_db, bad_signature)) == ["checkpoint-signature"]
    assert "checkpoint-signature" in kinds(await verify_against(isolated_db, shifted))


async def test_a_checkpoint_signed_with_another_key_is_found(
    isolated_db: IsolatedDatabase,
) -> None:
    await build_history(isolated_db)
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    intruder = Ed25519PrivateKey.generate()
    forged = await checkpoint_of_everything(isolated_db.pool, intruder)
    # The intruder's checkpoint, passed off as ours by naming our key.
    disguised = msgspec.structs.replace(forged, public_key=public_key_hex(KEY.public_key()))

    wrong_key = await verify_against(isolated_db, checkpoint, key=intruder)
    forged_report = await verify_against(isolated_db, forged)
    disguised_report = await verify_against(isolated_db, disguised)
    rotated = await verify(
        isolated_db.pool,
        checkpoints=[CheckpointAudit(checkpoint, [intruder.public_key(), KEY.public_key()])],
    )

    for report in (wrong_key, forged_report):
        [finding] = report.findings
        assert finding.kind == "checkpoint-signature"
        assert "which is not a trusted key" in finding.detail
    [finding] = disguised_report.findings
    assert finding.kind == "checkpoint-signature"
    assert "does not match its signed fields" in finding.detail
    assert rotated.findings == []  # any one of several trusted keys will do


async def test_the_cli_makes_a_key_signs_a_checkpoint_and_verifies_against_it(
    isolated_db: IsolatedDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await build_history(isolated_db)
    key_file = tmp_path / "checkpoint-key.pem"
    saved = tmp_path / "checkpoint-1.json"

    keygen = await ledger(isolated_db.url, "audit", "keygen", "--out", str(key_file))
    again = await ledger(isolated_db.url, "audit", "keygen", "--out", str(key_file))
    monkeypatch.setenv("LEDGER_CHECKPOINT_KEY", str(key_file))  # the runner passes it on
    taken = await ledger(isolated_db.url, "audit", "checkpoint", "-o", str(saved))
    monkeypatch.delenv("LEDGER_CHECKPOINT_KEY")
    public = str(key_file) + ".pub"
    anchored = ("audit", "verify", "--checkpoint", str(saved), "--public-key", public)
    clean = await ledger(isolated_db.url, *anchored)
    unkeyed = await ledger(isolated_db.url, "audit", "verify", "--checkpoint", str(saved))
    await rewrite_stream(isolated_db.url, account_stream_id("acct_bob"), 14, *SPEND_OF_60_FOR_100)
    await rebuild_views(isolated_db)
    plain = await ledger(isolated_db.url, "audit", "verify")
    dirty = await ledger(isolated_db.url, *anchored)
    dirty_json = await ledger(isolated_db.url, *anchored, "--json")

    assert keygen.returncode == 0, keygen.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "-----BEGIN PUBLIC KEY-----" in keygen.stdout
    assert await asyncio.to_thread(Path(public).read_text) in keygen.stdout
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert taken.returncode == 0, taken.stderr
    written = json.loads(await asyncio.to_thread(saved.read_text))
    assert written["format"] == "credit-ledger-checkpoint"
    assert written["public_key"] in keygen.stdout
    assert len(written["heads"]) == written["stream_count"] == 6
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "nothing at or before the checkpoints changed" in clean.stdout
    assert f"position {written['position']}" in clean.stdout
    assert unkeyed.returncode == 0
    assert "no --public-key" in unkeyed.stderr
    assert "Compare that key with your trusted copy" in unkeyed.stderr
    assert plain.returncode == 0, plain.stdout
    assert dirty.returncode == 1
    assert "[checkpoint-head] account acct_bob" in dirty.stdout
    assert "FAILED: 1 finding\n" in dirty.stdout  # as every count: "1 finding(s)" before
    assert [f["kind"] for f in json.loads(dirty_json.stdout)["findings"]] == ["checkpoint-head"]


async def test_in_production_the_audit_commands_need_the_database_and_no_service_secret(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    """An auditor's host, or the one that signs checkpoints, holds the database's URL and
    should not hold the Stripe key: production asked every command for it (and, until
    the thirty-sixth session, the operator's `accounts` and `tokens` commands too)."""
    await build_history(isolated_db)
    key_file = tmp_path / "checkpoint-key.pem"
    saved = tmp_path / "checkpoint.json"
    await ledger(isolated_db.url, "audit", "keygen", "--out", str(key_file))
    production = {
        "LEDGER_ENV": "production",
        "LEDGER_DATA_DIR": str(tmp_path / "data"),
        **dict.fromkeys(
            ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "LEDGER_PAGE_KEY"),
            "",
        ),
        **dict.fromkeys(("METRICS_PORT", "METRICS_TOKEN"), ""),
    }

    def run(*args: str) -> Any:
        return ledger(isolated_db.url, *args, env=production)

    signed = await run("audit", "checkpoint", "--key", str(key_file), "-o", str(saved))
    verified = await run(
        "audit", "verify", "--checkpoint", str(saved), "--public-key", f"{key_file}.pub"
    )
    exported = await run("audit", "export", "acct_bob")
    service = await run("accounts", "list")
    token = await run("tokens", "create", "--scope", "ledger:audit", "--name", "auditor")
    nowhere = await ledger("", "audit", "verify", env=production)

    assert signed.returncode == 0, signed.stderr
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "nothing at or before the checkpoints changed" in verified.stdout
    assert exported.returncode == 0, exported.stderr
    assert service.returncode == 0, service.stderr  # an operator's command: no Stripe either
    assert "acct_bob" in service.stdout
    assert token.returncode == 0, token.stderr
    assert "keep it secret" in token.stdout
    assert nowhere.returncode == 2  # could not verify: not 1, which says it found something
    assert "needs DATABASE_URL" in nowhere.stderr
    assert not (tmp_path / "data").exists()  # no development secret made on the way


async def test_the_json_report_names_the_checkpoints_it_checked_and_whether_by_a_trusted_key(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    """The text report names each checkpoint and warns (on stderr) when no --public-key was
    given; the --json report, which the documented cron keeps as verify-last.json, said
    neither, so a kept report could not tell what it vouched for, nor that the signer was
    only the key the file names itself."""
    await build_history(isolated_db)
    key_file = tmp_path / "checkpoint-key.pem"
    saved = tmp_path / "checkpoint-1.json"
    await ledger(isolated_db.url, "audit", "keygen", "--out", str(key_file))
    taken = await ledger(
        isolated_db.url, "audit", "checkpoint", "--key", str(key_file), "-o", str(saved)
    )
    written = json.loads(await asyncio.to_thread(saved.read_text))
    verify_json = ("audit", "verify", "--json", "--checkpoint", str(saved))

    keyed = await ledger(isolated_db.url, *verify_json, "--public-key", f"{key_file}.pub")
    unkeyed = await ledger(isolated_db.url, *verify_json)
    plain = await ledger(isolated_db.url, "audit", "verify", "--json")

    assert taken.returncode == keyed.returncode == unkeyed.returncode == 0, keyed.stderr
    checked = {
        "file": str(saved),
        "position": written["position"],
        "event_count": written["event_count"],
        "stream_count": written["stream_count"],
        "created_at": written["created_at"],
        "public_key": written["public_key"],
    }
    assert json.loads(keyed.stdout)["checkpoints"] == [
        checked | {"checked_against_trusted_keys": True}
    ]
    assert json.loads(unkeyed.stdout)["checkpoints"] == [
        checked | {"checked_against_trusted_keys": False}
    ]
    assert json.loads(plain.stdout)["checkpoints"] == []


async def test_a_public_key_without_a_checkpoint_is_said_to_check_nothing(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    key_file = tmp_path / "checkpoint-key.pem"
    await ledger(isolated_db.url, "audit", "keygen", "--out", str(key_file))

    audited = await ledger(isolated_db.url, "audit", "verify", "--public-key", f"{key_file}.pub")

    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "--public-key without --checkpoint" in audited.stderr


async def test_a_checkpoint_written_over_a_directory_is_refused_before_it_is_taken(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    """It said "checkpoint at position …", then "Error: Is a directory", and left its
    temporary file beside the directory (an operations review)."""
    key_file = tmp_path / "key" / "checkpoint-key.pem"
    key_file.parent.mkdir()
    made = await ledger(isolated_db.url, "audit", "keygen", "--out", str(key_file))
    into = tmp_path / "checkpoints"
    into.mkdir()

    refused = await ledger(
        isolated_db.url, "audit", "checkpoint", "--key", str(key_file), "-o", str(into)
    )

    assert made.returncode == 0, made.stderr
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        f"Error: Invalid value for '--output' / '-o': '{into}' is a directory"
    )
    assert "checkpoint at position" not in refused.stderr
    left = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.rglob("*")))
    assert left == ["checkpoint-key.pem", "checkpoint-key.pem.pub", "checkpoints", "key"]


async def test_the_cli_refuses_a_file_that_is_not_a_checkpoint(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "credit-ledger-checkpoint"}')

    result = await ledger(isolated_db.url, "audit", "verify", "--checkpoint", str(broken))

    assert result.returncode == 2  # could not verify, not a finding
    assert "is not a checkpoint file" in result.stderr


async def test_a_checkpoint_of_an_empty_store_covers_nothing_and_stays_valid(
    isolated_db: IsolatedDatabase,
) -> None:
    checkpoint = await checkpoint_of_everything(isolated_db.pool)
    await build_history(isolated_db)

    report = await verify_against(isolated_db, checkpoint)

    assert (checkpoint.position, checkpoint.event_count, checkpoint.heads) == (0, 0, [])
    assert report.findings == []


async def test_a_head_whose_stored_hash_is_not_32_bytes_writes_no_checkpoint(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    """A row written by hand with a short hash was signed into a checkpoint file that no
    verify could read ("is not a checkpoint file": the format holds 32-byte hashes)."""
    opened = await ledger(isolated_db.url, "accounts", "open", "acct_short_hash")
    assert opened.returncode == 0, opened.stderr
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
               VALUES ($1, 2, 'ledger.domain.events:CreditsSpent', '{}', '\\x00')""",
            account_stream_id("acct_short_hash"),
        )
    finally:
        await admin.close()
    key_file = tmp_path / "key.pem"
    saved = tmp_path / "checkpoint.json"
    assert (
        await ledger(isolated_db.url, "audit", "keygen", "--out", str(key_file))
    ).returncode == 0

    taken = await ledger(
        isolated_db.url, "audit", "checkpoint", "--key", str(key_file), "-o", str(saved)
    )

    assert taken.returncode == 1, taken.stderr
    [line] = taken.stderr.splitlines()
    assert "head (version 2) has a stored hash of 1 bytes, not 32" in line, line
    assert not saved.exists()

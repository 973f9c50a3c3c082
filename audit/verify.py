"""``ledger audit verify``: replay every event and prove the ledger right.

Everything is read in one REPEATABLE READ snapshot, so the events, the views
and their positions agree with each other. Events stream through a server-side
cursor in commit order: memory grows with the number of streams (accounts and
Checkout sessions), never with the number of events.

Balances are recomputed through the domain's own aggregates, not through the
projections' code, so a bug in either shows up as a disagreement.

Besides the events and the views it checks what the service trusts without
replaying: every snapshot (loads start from them) must be the aggregate its
events make at that version, and what each paid Checkout session's refunds and
disputes took back must be what the rule (ledger/domain/adjustments.py) makes of
its facts, and what its account gave back.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from audit.checkpoint import CheckpointAudit
from audit.findings import Finding
from audit.parts import (
    PartJob,
    SentPart,
    drain_progress,
    merge_parts,
    outcome_seen,
    received,
    replay_in_worker,
    replay_part,
    start_worker,
)
from audit.replay_state import CLAIM_SCOPES, CLAIMED, MOVED, Part, PurchaseAt, Settled, ViewRow
from audit.sessions import moved_said, not_taken
from audit.time_skew import MAX_TIME_SKEW_SECONDS
from ledger.child_processes import spawned_without_main, started_deaf_to_ctrl_c, stop_pool_now
from ledger.domain.events import HoldCaptured, HoldExpired, HoldReleased
from ledger.handlers.hold_answers import Hold
from ledger.handlers.payments import LINK_SCOPE
from ledger.handlers.purchases import CheckoutStarted
from ledger.store.event_store import Connection
from ledger.store.migrate import LOGIN_ROLES, packaged
from projections.runner import all_projections

PROGRESS_SECONDS = 0.2
"""How often the workers' progress is passed on."""

_HOLD_COLUMNS = (
    "stream_id",
    "amount",
    "captured",
    "released",
    "status",
    "reason",
    "expires_at",
    "placed_at",
    "settled_at",
)
_GRANT_COLUMNS = (
    "stream_id",
    "amount",
    "remaining",
    "priority",
    "expires_at",
    "reason",
    "status",
    "position",
    "granted_at",
    "closed_at",
)
assert _GRANT_COLUMNS[-3:] == ("position", "granted_at", "closed_at")  # _grant_row reads them so
_SETTLEMENT_SCOPE = "hold-settlement/"
"""A hold's one settlement is claimed under its id (``settle_claim``, ``expiry_claim``)."""


class Report(msgspec.Struct):
    """The audit's outcome."""

    events: int
    streams: int
    accounts: int
    checkout_sessions: int
    snapshots: int
    seconds: float
    events_per_second: float
    jobs: int
    """The processes that replayed (``--jobs``, or its default for the store's size)."""
    projection_positions: dict[str, int]
    findings: list[Finding]
    max_time_skew_seconds: float | None
    """The bound events' own times were judged by (``--max-time-skew``): an event's time
    further than this from its recorded time is ``time-far-from-record``. None when no
    event's time was judged (``inf``, which JSON cannot write)."""

    @property
    def ok(self) -> bool:
        return not self.findings


_APPEND_ONLY = ("stored_events", "snapshots", "claims")
"""History: each with its two triggers, ``<table>_no_update_or_delete`` and ``_no_truncate``
(ledger/store/migrations: 0001, 0012, 0021)."""

# Each trigger missing, not firing in every ordinary session ('O': origin and local, 'A':
# always; 'D' is disabled, 'R' fires only in replica mode), calling another function, on
# other operations, or only on some rows (a WHEN condition) or columns (UPDATE OF); the
# function itself changed, so that it lets every change through under the same name; each
# write the service's role may make on history, also on some columns only, or by acting as
# the tables' owner. The trigger types' bits: 1 row, 2 before, 8 delete, 16 update, 32 truncate.
_PROTECTIONS = """
    SELECT table_name || '.' || suffix AS name,
           CASE WHEN t.tgenabled IS NULL THEN 'the append-only trigger is missing'
                WHEN t.tgenabled NOT IN ('O', 'A') THEN 'the append-only trigger does not fire'
                WHEN t.tgqual IS NOT NULL OR cardinality(t.tgattr::int2[]) > 0
                    THEN 'the append-only trigger fires only on some rows or columns'
                ELSE 'the append-only trigger is not what the migrations made' END AS problem
    FROM unnest($1::text[]) AS table_name
    CROSS JOIN (VALUES ('no_update_or_delete', 27), ('no_truncate', 34)) AS kind(suffix, bits)
    LEFT JOIN pg_trigger t ON t.tgname = table_name || '_' || suffix
        AND t.tgrelid = to_regclass('public.' || table_name)
    WHERE t.tgenabled IS NULL OR t.tgenabled NOT IN ('O', 'A')
       OR t.tgfoid IS DISTINCT FROM to_regproc('public.stored_events_are_append_only')
       OR t.tgtype::int & 59 <> bits
       OR t.tgqual IS NOT NULL OR cardinality(t.tgattr::int2[]) > 0
    UNION ALL
    SELECT 'stored_events_are_append_only()',
           'the function of the append-only triggers is not what the migrations made'
    WHERE (SELECT prosrc FROM pg_proc
           WHERE oid = to_regproc('public.stored_events_are_append_only')) IS DISTINCT FROM $3
    UNION ALL
    SELECT table_name, format('the role %s may %s', role, privilege)
    FROM unnest($1::text[]) AS table_name
    CROSS JOIN unnest($2::text[]) AS role
    CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS privilege
    WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
      AND CASE WHEN privilege IN ('INSERT', 'UPDATE')
               THEN has_any_column_privilege(role, 'public.' || table_name, privilege)
               ELSE has_table_privilege(role, 'public.' || table_name, privilege) END
    UNION ALL
    SELECT table_name, format('the role %s may act as its owner, %s', role,
                              pg_get_userbyid(c.relowner))
    FROM unnest($1::text[]) AS table_name
    CROSS JOIN unnest($2::text[]) AS role
    JOIN pg_class c ON c.oid = to_regclass('public.' || table_name)
    WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
      AND pg_has_role(role, c.relowner, 'MEMBER')
    UNION ALL
    SELECT 'database ' || d.datname, format('the role %s may drop it as its owner, %s',
                                            role, pg_get_userbyid(d.datdba))
    FROM pg_database d
    CROSS JOIN unnest($2::text[]) AS role
    WHERE d.datname = current_database() AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
      AND pg_has_role(role, d.datdba, 'MEMBER')
    ORDER BY 1, 2"""
_APPEND_ONLY_BODY = packaged("sql/functions/10_append_only.sql").split("$$")[1]
"""The append-only triggers' function body as the migrations make it (``prosrc``)."""

# A relay's position (projection_positions' rows named 'relay:…') is written only by the
# relay's functions, as the owner: row security keeps every other role to the views' rows
# (migration 0030). Each way round it: row security off, its policies other than the
# migration made them (a permissive one more opens what the others close), a login role
# that may TRUNCATE the table (row security does not stop it) or bypasses row security.
_NOT_A_RELAY = "(NOT starts_with(name, 'relay:'::text))"
"""The policy's expression, as PostgreSQL shows it (``pg_get_expr``)."""
_RELAY_POSITION_PROTECTIONS = """
    SELECT 'projection_positions' AS name,
           'row security, which keeps the relay''s position to its own functions, is off'
               AS problem
    FROM pg_class WHERE oid = to_regclass('public.projection_positions') AND NOT relrowsecurity
    UNION ALL
    SELECT 'projection_positions', format('the row security policy %s is %s', polname,
        CASE WHEN m.cmd IS NULL THEN 'not one the migrations made'
             WHEN p.polcmd IS NULL THEN 'missing'
             ELSE 'not what the migrations made' END)
    FROM (SELECT polname::text, polcmd, polpermissive, polroles,
                 pg_get_expr(polqual, polrelid) AS qual,
                 pg_get_expr(polwithcheck, polrelid) AS checked
          FROM pg_policy WHERE polrelid = to_regclass('public.projection_positions')) AS p
    FULL JOIN (VALUES ('positions_read', 'r'::"char", 'true', NULL),
                      ('views_positions_written', '*'::"char", $2::text, $2::text))
        AS m(polname, cmd, qual, checked) USING (polname)
    WHERE p.polcmd IS DISTINCT FROM m.cmd OR p.polpermissive IS NOT TRUE
       OR p.polroles IS DISTINCT FROM '{0}'::oid[]
       OR p.qual IS DISTINCT FROM m.qual OR p.checked IS DISTINCT FROM m.checked
    UNION ALL
    SELECT 'projection_positions', format('the role %s may TRUNCATE', role)
    FROM unnest($1::text[]) AS role
    WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
      AND has_table_privilege(role, 'public.projection_positions', 'TRUNCATE')
    UNION ALL
    SELECT 'projection_positions', format('the role %s bypasses row security', rolname)
    FROM pg_roles WHERE rolname = any($1::text[]) AND rolbypassrls
    ORDER BY 1, 2"""

# The account a hidden event's stream belongs to: the one its first event names.
_STREAM_ACCOUNTS = """
    SELECT originator_id, event_account_id(state) AS account_id FROM stored_events
    WHERE originator_id = any($1::uuid[]) AND originator_version = 1"""

# Each account's line count, and the MD5 of its lines in order: each line's numbers as
# 8-byte big-endian integers (the time as PostgreSQL keeps it, microseconds since 2000),
# then its type (an ASCII class name, as the hash chain prefixes a topic) and description,
# each after its length in characters, in UTF-8
# (``StreamReplay.replay`` packs the replay's so). Bytes, not text: PostgreSQL's cost is the
# same (~1 s of CPU for 1,000,000 lines; the line count and last balance this replaced took
# 0.25 s), and the replay packs a line in half the time it formatted one.
# The text's UTF-8 bytes by ``textsend``, which gives them in the client's encoding: UTF-8 on
# the audit's connections (asyncpg's, unless a URL's query names another: SERVICE_SETTINGS and
# ``_read_views_beside`` name it again), the bytes ``convert_to(…, 'UTF8')`` made, for 6 %
# less of this query's CPU (1.33 -> 1.26 s on 980,000 lines).
_STATEMENT_DIGESTS = """
    SELECT account_id, count(*) AS lines,
           md5(string_agg(int8send(position) || int8send(version) || int8send(amount)
                   || int8send(allowance_change) || int8send(topup_change)
                   || int8send(granted_change) || int8send(allowance_after)
                   || int8send(topup_after) || int8send(granted_after)
                   || int8send(balance_after) || timestamptz_send(recorded_at)
                   || int4send(length(type)) || textsend(type)
                   || int4send(length(description)) || textsend(description),
               ''::bytea ORDER BY position)) AS digest
    FROM statement_lines GROUP BY account_id"""

# What each view holds that the replay is compared with, read once per run.
_VIEW_QUERIES = {
    "balances": """SELECT account_id, monthly_allowance, allowance_remaining, topup_balance,
                          held, period, granted, next_monthly_allowance, stream_id
                   FROM balances""",
    "notifications": """SELECT account_id, monthly_allowance, allowance_remaining,
                               topup_balance, held, threshold, granted, stream_id, low_armed,
                               depleted_armed
                        FROM notifier_accounts""",
    "purchases": f"""SELECT session_id, account_id, {", ".join(PurchaseAt.__struct_fields__)}
                     FROM purchases""",
    "statement": _STATEMENT_DIGESTS,
    "holds": f"SELECT hold_id, {', '.join(_HOLD_COLUMNS)} FROM holds",
    "grants": f"SELECT grant_id, {', '.join(_GRANT_COLUMNS)} FROM grants",
}

# How many claims each account's spends, holds and grants made (one each: CLAIMED). A claim
# carries no hash and no position: one deleted lets a retry of its key be recorded again (a
# second spend), one inserted answers its key's request without recording it.
# With them, in the same pass over the table (a million spends' claims are some 400 MB), each
# purchase's answer and each void's request (``_check_purchase_answers``, voids): few, and
# their keys optional.
# And, in that pass, the keys of the answers that do not name their claim's account
# (``_NAMING``) as the service writes it (msgspec: ``"account_id":"<account>"``), a search in
# the row's bytes in PostgreSQL; only those answers are read (``_MISNAMED_READ``) and decoded
# here. Reading every answer here cost 3.9 % more instructions an event, and decoding them
# in PostgreSQL made this read ten times slower; the search makes it about 16 ms slower for
# 94,000 spends' claims (27 -> 43 ms), nearly all of it in making each row's pattern (one
# fixed pattern costs 2 ms), and the replay's instructions an event 0.09 % more. Looking
# also for a second ``"account_id"`` and for a ``\u`` (``_MISNAMED``: two scans of each row
# where the pattern's search stops early) doubled that pass's backend CPU here, on a loaded
# 2-vCPU machine (81 -> 160 ms, no search at all 54 ms), and left the replay's instructions
# as they were (55,521 -> 55,472 an event).
_KEPT = "scope LIKE 'purchase/%' OR scope LIKE 'void/%'"
_NAMING = ("spend", "hold", "grant", "void", "reset")
"""``<scope>/<account>`` whose answers name the account (``Spent``, ``Hold``, ``GrantAnswer``,
``GrantClosedAnswer``, ``MonthReset``: its ``account_id``); a purchase's names a session."""
_MISNAMED = """NOT scope LIKE 'purchase/%' AND (position(
        textsend('"account_id":"' || split_part(scope, '/', 2) || '"') IN response) = 0
    OR position('"account_id"'::bytea IN substring(
        response FROM position('"account_id"'::bytea IN response) + 1)) > 0
    OR position('\\x5c75'::bytea IN response) > 0)"""
"""``textsend``: the pattern's bytes (account ids are ASCII, ``ACCOUNT_ID_PATTERN``), at less
cost than ``convert_to``. The pattern found is not enough: a decoder reads an object's last
``account_id``, and one after it (``{"account_id":"acct_a", …, "account_id":"acct_b"}``, or
spaced, or inside a nested object before the answer's own) names another account. So the
answer is read too where ``"account_id"`` occurs twice, or where it holds a ``\\u`` escape
(``x5c75``), which can spell the key without those bytes (``"\\u0061ccount_id"``): then
every key of that name shows as ``"account_id"``, and, there once, is the pattern's. The
service writes ``account_id`` once, its only key of that name (``from_grants``' keys are
grant ids), and ``\\u`` only for a control character in a reason: an answer whose reason
is ``account_id`` (whole or after a quote), or holds such a character or a backslash before
a ``u``, is read here, to no finding."""
_CLAIMS_READ = f"""
    SELECT scope, count(*) AS claims,
           array_agg(key) FILTER (WHERE {_KEPT}) AS keys,
           array_agg(CASE WHEN scope LIKE 'void/%' THEN request_hash ELSE response END)
               FILTER (WHERE {_KEPT}) AS kept,
           array_agg(key) FILTER (WHERE {_MISNAMED}) AS misnamed
    FROM claims
    WHERE {" OR ".join(f"scope LIKE '{scope}/%'" for scope in (*_NAMING, "purchase"))}
    GROUP BY scope"""
assert set(CLAIM_SCOPES) <= set(_NAMING)
_MISNAMED_READ = """
    SELECT scope, key, response FROM claims
    WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
    ORDER BY scope, key"""

# Every hold's settlement claim, with its answer, read row by row (one a hold settled: not
# gathered into one array per account as the few above are, where a busy account's would
# outgrow what one value may hold). Each must answer its hold's settlement as recorded.
_SETTLEMENT_CLAIMS_READ = f"""
    SELECT scope, key, response FROM claims WHERE scope LIKE '{_SETTLEMENT_SCOPE}%'"""


class _NamesAccount(msgspec.Struct):
    """The account a claim's answer names (``_NAMING``)."""

    account_id: str | None = None


class Verifier:
    """One audit run over one consistent snapshot of the database.

    With ``jobs`` > 1 the streams are split over that many worker processes by a
    hash of their id; each reads this transaction's snapshot through a connection
    of its own to ``database_url``. Whatever needs more than one stream (purchases
    against sessions, what accounts took back, checkpoints, the views) is checked
    here, once the parts are merged.
    """

    def __init__(
        self,
        connection: Connection,
        checkpoints: Sequence[CheckpointAudit] = (),
        *,
        jobs: int = 1,
        database_url: str | None = None,
        max_time_skew: float = MAX_TIME_SKEW_SECONDS,
    ) -> None:
        if jobs > 1 and database_url is None:
            raise ValueError("replaying with more than one job needs the database's URL")
        self.connection = connection
        self.checkpoints = checkpoints
        self.jobs = jobs
        self.database_url = database_url
        self.max_time_skew = max_time_skew
        self.findings: list[Finding] = []
        self.positions: dict[str, int] = {}
        self.views: dict[str, list[asyncpg.Record]] = {}
        self.links: list[asyncpg.Record] = []
        self.claim_counts: list[asyncpg.Record] = []
        self.purchase_claims: list[tuple[str, str, bytes]] = []
        """(scope, key, answer) of each purchase's claim."""
        self.void_claims: list[tuple[str, str, bytes]] = []
        """(scope, key, request fingerprint) of each void's claim."""
        self.settlement_claims: list[tuple[str, str, Settled | None]] = []
        """(account, hold id, what its answer tells, None if it cannot be read) of each hold's
        settlement claim."""
        self.misnamed_claims: list[tuple[str, str, bytes]] = []
        """(scope, key, answer) of each claim whose answer may name another account than its
        scope's (``_MISNAMED``)."""

    async def run(self, on_progress: Callable[[int], None] = lambda _: None) -> Report:
        """Replay, check, compare; ``on_progress(n)`` after every n events."""
        started = time.perf_counter()
        rows = await self.connection.fetch("SELECT name, position FROM projection_positions")
        self.positions = {r["name"]: r["position"] for r in rows}
        await self._check_positions()
        await self._check_protections()
        if self.jobs == 1:
            replays = [c.replay.empty_copy() for c in self.checkpoints]
            parts = [
                await replay_part(
                    self.connection,
                    self.positions,
                    replays,
                    on_progress,
                    max_time_skew=self.max_time_skew,
                )
            ]
            await self._read_views()
        else:
            parts = await self._replay_in_workers(on_progress)
        part = merge_parts(parts)
        self.findings.extend(part.findings)
        for checkpoint, replayed in zip(self.checkpoints, part.checkpoints, strict=True):
            checkpoint.replay.merge(replayed)
            self.findings.extend(checkpoint.findings(part.stream_accounts.get))
        await self._check_hidden_events(part)
        self._check_purchases(part)
        self._check_adjustments(part)
        self._check_payment_links(part)
        self._check_kept_before_payment(part)
        await self._check_claims(part)
        self._check_account_rows(part, "balances")
        self._check_purchases_view(part)
        self._check_statement_view(part)
        self._check_holds_view(part)
        self._check_grants_view(part)
        self._check_account_rows(part, "notifications")  # the alerts' own copy of the buckets
        seconds = time.perf_counter() - started
        return Report(
            events=part.events,
            streams=part.streams,
            accounts=part.accounts,
            checkout_sessions=len(part.sessions),
            snapshots=part.snapshots,
            seconds=round(seconds, 3),
            events_per_second=round(part.events / seconds, 1) if seconds else 0.0,
            jobs=self.jobs,
            projection_positions=self.positions,
            findings=sorted(self.findings, key=_finding_order),
            max_time_skew_seconds=(
                self.max_time_skew if math.isfinite(self.max_time_skew) else None
            ),
        )

    async def _check_positions(self) -> None:
        """A view's position is the last event it folded: never past the store's last
        event (where it would skip the events written there when they come)."""
        last = await self.connection.fetchval("SELECT max(notification_id) FROM stored_events")
        for projection in all_projections():
            if projection.name not in self.positions and await self.connection.fetchval(
                f"SELECT EXISTS (SELECT FROM {projection.table})"
            ):
                self.findings.append(
                    Finding(
                        kind="projection-position",
                        detail=f"the {projection.name} view has rows and no position (its "
                        "row in projection_positions is gone): the projector would fold every "
                        "event into it again",
                    )
                )
        for view, position in sorted(self.positions.items()):
            if position > (last or 0):
                self.findings.append(
                    Finding(
                        kind="projection-position",
                        detail=f"the {view} view is at position {position}, past the store's "
                        f"last event ({last or 0}): it would skip the events written up to it",
                    )
                )

    async def _check_protections(self) -> None:
        """History is append-only by trigger, and the service's and the relay's roles may only
        read it: a trigger dropped or disabled, or a privilege granted, would let history
        change without a trace of how (the hash chains show what, not who). And a relay's
        position is the relay's own: moved by another role, events would never reach the
        broker, or reach it again."""
        rows = await self.connection.fetch(
            _PROTECTIONS, list(_APPEND_ONLY), list(LOGIN_ROLES), _APPEND_ONLY_BODY
        )
        rows += await self.connection.fetch(
            _RELAY_POSITION_PROTECTIONS, list(LOGIN_ROLES), _NOT_A_RELAY
        )
        for row in rows:
            self.findings.append(
                Finding(kind="store-protection", detail=f"{row['problem']} on {row['name']}")
            )

    async def _check_hidden_events(self, part: Part) -> None:
        """Events that readers in commit order never reach, though they are in the store."""
        if not part.hidden:
            return
        rows = await self.connection.fetch(
            _STREAM_ACCOUNTS, list({hidden.stream_id for hidden in part.hidden})
        )
        accounts: dict[UUID, str | None] = {row["originator_id"]: row["account_id"] for row in rows}
        for hidden in part.hidden:
            self.findings.append(
                Finding(
                    kind="hidden-event",
                    detail=f"its transaction id {hidden.transaction_id} had not ended when this "
                    "audit began, so the event feeds, the account histories and the projector "
                    "pass over it: its transaction_id was changed by hand, or the database was "
                    "restored into a PostgreSQL whose transaction ids are behind the original's "
                    "(docs/backup-and-restore.md)",
                    account_id=accounts.get(hidden.stream_id),
                    stream_id=str(hidden.stream_id),
                    version=hidden.version,
                    position=hidden.position,
                )
            )
        if (more := part.hidden_count - len(part.hidden)) > 0:
            self.findings.append(
                Finding(
                    kind="hidden-event",
                    detail=f"{more:,} more events up to position {part.last_hidden} are "
                    "hidden from readers in the same way",
                )
            )

    async def _replay_in_workers(self, on_progress: Callable[[int], None]) -> list[Part]:
        """Part 0 is replayed here, each other part by a worker process, all in this snapshot.

        This process would only wait otherwise; and its part starts at once, while
        the workers start Python and import the domain.
        """
        assert self.database_url is not None
        # This transaction holds the snapshot the workers read: it stays open, idle,
        # until they are done, however long that takes.
        await self.connection.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        snapshot = await self.connection.fetchval("SELECT pg_export_snapshot()")
        jobs = [
            PartJob(
                database_url=self.database_url,
                snapshot=snapshot,
                index=index,
                count=self.jobs,
                positions=self.positions,
                checkpoints=[c.replay.empty_copy() for c in self.checkpoints],
                max_time_skew=self.max_time_skew,
            )
            for index in range(1, self.jobs)
        ]
        context = multiprocessing.get_context("spawn")
        progress: multiprocessing.Queue[int] = context.Queue()
        reported = 0

        def report(events: int) -> None:
            nonlocal reported
            on_progress(events)
            reported += drain_progress(progress, on_progress)

        with ProcessPoolExecutor(
            len(jobs), mp_context=context, initializer=start_worker, initargs=(progress,)
        ) as executor:
            done: asyncio.Future[list[SentPart]] | None = None
            views_read: asyncio.Future[None] | None = None
            try:
                with started_deaf_to_ctrl_c(), spawned_without_main():
                    futures = [executor.submit(replay_in_worker, job) for job in jobs]
                done = asyncio.gather(*map(asyncio.wrap_future, futures))
                # The views are read beside the replay, on a connection of their own in the
                # same snapshot: PostgreSQL digests the statement while Python replays.
                views_read = asyncio.ensure_future(self._read_views_beside(snapshot))
                here = await replay_part(
                    self.connection,
                    self.positions,
                    [c.replay.empty_copy() for c in self.checkpoints],
                    report,
                    (0, self.jobs),
                    self.max_time_skew,
                )
                await views_read
                while not done.done():
                    await asyncio.wait([done], timeout=PROGRESS_SECONDS)
                    reported += drain_progress(progress, on_progress)
            except BaseException:  # Ctrl-C among them: the workers ignore it
                stop_pool_now(executor)
                for pending in (done, views_read):
                    if pending is not None:
                        pending.cancel()
                        pending.add_done_callback(outcome_seen)
                raise
            parts = [here, *map(received, done.result())]
        progress.close()
        # Counts still on their way through the queue when the results came.
        if (unreported := sum(p.events for p in parts[1:]) - reported) > 0:
            on_progress(unreported)
        return parts

    def _check_purchases(self, part: Part) -> None:
        sessions = {s.session_id: s for s in part.sessions}
        for session_id, credits in part.credited.items():
            if len(credits) > 1:
                positions = ", ".join(str(p) for _, _, p in credits)
                self.findings.append(
                    Finding(
                        kind="credited-twice",
                        account_id=credits[0][0],
                        detail=f"session {session_id} credited {len(credits)} times "
                        f"(positions {positions})",
                    )
                )
            account_id, amount, position = credits[0]
            session = sessions.get(session_id)
            if session is None or not session.paid:
                self.findings.append(
                    Finding(
                        kind="purchase-without-checkout",
                        account_id=account_id,
                        position=position,
                        detail=f"CreditsPurchased names session {session_id}, which was never paid",
                    )
                )
            elif (session.account_id, session.credits) != (account_id, amount):
                self.findings.append(
                    Finding(
                        kind="purchase-mismatch",
                        account_id=account_id,
                        position=position,
                        detail=f"credited {amount} to {account_id}; session {session_id} sold "
                        f"{session.credits} to {session.account_id}",
                    )
                )

    def _check_adjustments(self, part: Part) -> None:
        """What refunds and disputes took back of each purchase: by the rule, and on its account.

        Sessions disputed under the first releases' rules (``PaymentDisputed``,
        ``DisputeClosed``) kept what those rules decided: only their account is checked. A
        chargeback's share rounded down, as it was before it was rounded up, is accepted;
        the refunds' share and the disputes' are each judged, not only their sum.
        """
        taken_back = dict(part.taken_back)
        for session in part.sessions:
            took = session.clawed_back + session.reversed
            given = taken_back.pop(session.session_id, None)
            problems = []
            rule = session.rule
            if rule is not None and not session.took_by_a_rule():
                problems.append(
                    f"its refunds and disputes took back {took} credits "
                    f"({session.clawed_back} refunded, {session.reversed} "
                    f"disputed), its facts {rule.refunded + rule.disputed} ({rule.refunded} "
                    f"refunded, {rule.disputed} disputed)"
                )
            if session.amount_refunded != session.refunded_by_facts:
                problems.append(
                    f"it recorded {session.amount_refunded} refunded, its facts "
                    f"{session.refunded_by_facts}"
                )
            if (given.credits if given else 0) != took:
                problems.append(
                    f"its account's events took back {given.credits if given else 0} credits, "
                    f"the session {took}"
                )
            elif (moved := tuple(given.moved) if given else (0,) * len(MOVED)) != session.moved:
                problems.append(
                    f"its account's events {moved_said(moved)}; the session's "
                    f"{moved_said(session.moved)}"
                )
            if given and (given.account_id != session.account_id or given.other_accounts):
                accounts = ", ".join(sorted({given.account_id, *given.other_accounts}))
                problems.append(f"sold to {session.account_id}, taken back from {accounts}")
            self.findings.extend(
                Finding(
                    kind="adjustment-mismatch",
                    account_id=session.account_id,
                    stream_id=str(session.stream_id),
                    position=given.position if given else None,
                    detail=f"session {session.session_id}: {problem}",
                )
                for problem in problems
            )
        for session_id, given in taken_back.items():
            self.findings.append(
                Finding(
                    kind="adjustment-mismatch",
                    account_id=given.account_id,
                    position=given.position,
                    detail=f"credits taken back for session {session_id}, which was never "
                    "requested",
                )
            )

    async def _read_views(self, connection: Connection | None = None) -> None:
        """Every view's rows the replay is compared with, in this transaction's snapshot."""
        connection = connection or self.connection
        for view, query in _VIEW_QUERIES.items():
            self.views[view] = await connection.fetch(query)
        self.links = await connection.fetch(
            "SELECT key, response FROM claims WHERE scope = $1", LINK_SCOPE
        )
        self.claim_counts = []
        misnamed: list[tuple[str, str]] = []
        for row in await connection.fetch(_CLAIMS_READ):
            scope = row["scope"]
            misnamed.extend((scope, key) for key in row["misnamed"] or ())
            if scope.startswith("reset/"):
                continue  # neither counted nor kept: a reset's key is optional
            if row["keys"] is None:
                self.claim_counts.append(row)
                continue
            kept = self.void_claims if scope.startswith("void/") else self.purchase_claims
            pairs = zip(row["keys"], row["kept"], strict=True)
            kept.extend((scope, key, value) for key, value in pairs)
        self.misnamed_claims = []
        if misnamed:
            scopes, keys = zip(*misnamed, strict=True)
            for row in await connection.fetch(_MISNAMED_READ, scopes, keys):
                self.misnamed_claims.append((row["scope"], row["key"], row["response"]))
        self.settlement_claims = []
        async for row in connection.cursor(_SETTLEMENT_CLAIMS_READ, prefetch=5000):
            try:
                answer = msgspec.json.decode(row["response"], type=Hold)
            except msgspec.DecodeError:
                told = None
            else:
                told = Settled(answer.status, answer.captured, answer.released)
            account_id = row["scope"].removeprefix(_SETTLEMENT_SCOPE)
            if told is not None and answer.account_id != account_id:
                self.misnamed_claims.append((row["scope"], row["key"], row["response"]))
            self.settlement_claims.append((account_id, row["key"], told))

    async def _read_views_beside(self, snapshot: str) -> None:
        """``_read_views`` on a connection of its own, in the exported ``snapshot``."""
        assert self.database_url is not None
        # UTF-8 whatever the URL's query names: the statement digests' text (``textsend``).
        connection = await asyncpg.connect(
            self.database_url, server_settings={"client_encoding": "UTF8"}
        )
        try:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                await connection.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                await self._read_views(connection)
        finally:
            await connection.close()

    def _check_payment_links(self, part: Part) -> None:
        """Each payment intent's link names the session that intent paid: refunds and
        disputes, which name only the intent, are applied to the session it names."""
        sessions = {s.session_id: s for s in part.sessions}
        for link in self.links:
            intent, session_id = link["key"], link["response"].decode(errors="replace")
            if not session_id:
                continue  # claimed by a refund or dispute that came first: the intent's stream links
            session = sessions.get(session_id)
            if session is None:
                problem = "the store has no such session"
            elif session.payment_intent not in (None, intent):
                problem = f"which {session.payment_intent} paid"
            else:
                continue  # paid by it, or a payment of another amount, which names none
            self.findings.append(
                Finding(
                    kind="payment-link",
                    account_id=session.account_id if session else None,
                    detail=f"payment intent {intent} is linked to session {session_id}, "
                    f"{problem}: its refunds and disputes would be applied there",
                )
            )

    def _check_kept_before_payment(self, part: Part) -> None:
        """What a payment intent kept before its payment (a refund, a refund's status, a
        dispute's) is what the session it links took when the payment came (or newer news):
        the session and its account agreeing is no proof that they heard it. Sessions
        disputed under the first releases' rules are left alone, as ``_check_adjustments``
        leaves them."""
        sessions = {s.session_id: s for s in part.sessions}
        for intent in part.intents:
            session = sessions.get(intent.session_id)
            if session is not None and session.rule is None:
                continue
            missed = not_taken(intent, session) if session is not None else ["everything"]
            if not missed:
                continue
            self.findings.append(
                Finding(
                    kind="payment-link",
                    account_id=session.account_id if session else None,
                    detail=f"payment intent {intent.payment_intent} kept, before its payment, "
                    f"what its session {intent.session_id} never took: {', '.join(missed)}"
                    + ("" if session else " (the store has no such session)"),
                )
            )

    async def _check_claims(self, part: Part) -> None:
        """One claim per spend, hold and grant recorded, none for an open hold's settlement,
        and a settled hold's telling its settlement: claims are what makes a retry safe, and
        nothing else records them."""
        counted: dict[str, list[int]] = {}
        for row in self.claim_counts:
            scope, _, account_id = row["scope"].partition("/")
            counts = counted.setdefault(account_id, [0] * len(CLAIM_SCOPES))
            counts[CLAIM_SCOPES.index(scope)] = row["claims"]
        kinds = sorted(CLAIMED, key=CLAIMED.__getitem__)
        for account_id, events in part.claimed.items():
            claims = counted.get(account_id, [0] * len(CLAIM_SCOPES))
            for scope, kind, made, recorded in zip(
                CLAIM_SCOPES, kinds, claims, events, strict=True
            ):
                if made != recorded:
                    self.findings.append(
                        Finding(
                            kind="claim-mismatch",
                            account_id=account_id,
                            detail=f"{made} {scope} claims, {recorded} {kind.__name__} events: "
                            + (
                                "a key whose claim is gone is recorded again when retried"
                                if made < recorded
                                else "a claim with no event answers its key's request, "
                                "which was never recorded"
                            ),
                        )
                    )
        # Claims of an account with no events (no account stream) answer their keys'
        # requests, spends among them, as if recorded: nothing above counted them.
        for account_id in sorted(counted.keys() - part.claimed.keys() - set(part.unreplayed)):
            for scope, made in zip(CLAIM_SCOPES, counted[account_id], strict=True):
                if made:
                    self.findings.append(
                        Finding(
                            kind="claim-mismatch",
                            account_id=account_id,
                            detail=f"{made} {scope} claims for an account with no events: "
                            "each answers its key's request, which was never recorded",
                        )
                    )
        self._check_purchase_answers(part)
        # A void's key is optional, so voids are not counted: each void claim must be the
        # request of a void recorded on its account (grant and reason). One that is not was
        # never recorded, and answers a request to void that grant without voiding it.
        for scope, key, request_hash in self.void_claims:
            account_id = scope.removeprefix("void/")
            if (account_id, request_hash) not in part.voids:
                self.findings.append(
                    Finding(
                        kind="claim-mismatch",
                        account_id=account_id,
                        detail=f"void key {key!r} is claimed for a void no GrantVoided "
                        "records: a request under it is answered voided, and its grant stays",
                    )
                )
        self._check_settlement_answers(part)
        self._check_answers_name_their_accounts()

    def _check_answers_name_their_accounts(self) -> None:
        """A claim's answer is what a retry of its key is given: a spend's, hold's, grant's,
        void's, reset's and settlement's names the account its command wrote (the scope's),
        never another's balances. Only answers PostgreSQL did not find the account's id in, or
        found another ``account_id`` or an escape in, come here (``_MISNAMED``), to be read as
        a retry reads them (an object's last ``account_id``): one written with other spacing
        names it too.
        One that cannot be read or names no account is left alone: it tells no other
        account's balances (a retry of the key fails to read it)."""
        for scope, key, response in self.misnamed_claims:
            kind, _, account_id = scope.partition("/")
            try:
                named = msgspec.json.decode(response, type=_NamesAccount).account_id
            except msgspec.DecodeError:
                continue
            if named is None or named == account_id:
                continue
            self.findings.append(
                Finding(
                    kind="claim-mismatch",
                    account_id=account_id,
                    detail=f"the answer kept for {kind} key {key!r} names account {named}, "
                    "not the account its command wrote: a retry of the key is given it",
                )
            )

    def _check_settlement_answers(self, part: Part) -> None:
        """A settled hold's claim answers its capture, release and expiry, their retries and
        the hold's reads: it tells the settlement recorded (its kind, captured and released).
        A claim of a hold never settled answers that hold's settlement once it is placed, and
        it is never recorded. None is of a hold open at the end, as a hold's settlement and
        its claim are written together: one there answers its capture, release and expiry,
        recording none, and the hold keeps its credits for good. A settled hold with no claim
        is read, and its settlement retried, as a hold never placed (404)."""
        unreplayed = set(part.unreplayed)
        open_holds = set(part.open_holds)
        none: dict[str, Settled] = {}
        claimed: set[tuple[str, str]] = set()
        for account_id, hold_id, told in self.settlement_claims:
            if account_id in unreplayed:
                continue
            claimed.add((account_id, hold_id))
            recorded = part.settled_holds.get(account_id, none).get(hold_id)
            if (account_id, hold_id) in open_holds:
                self.findings.append(
                    Finding(
                        kind="claim-mismatch",
                        account_id=account_id,
                        detail=f"hold {hold_id} is open and its settlement is claimed: its "
                        "capture, release and expiry are answered from the claim and never "
                        "recorded, and it keeps its credits",
                    )
                )
                continue
            if recorded is None:
                problem = f"hold {hold_id}'s settlement is claimed, and no such hold was settled"
            elif told is None:
                problem = f"hold {hold_id}'s settlement claim answers what cannot be read"
            elif told != recorded:
                kind = {"captured": HoldCaptured, "released": HoldReleased}.get(
                    recorded.status, HoldExpired
                )
                problem = (
                    f"hold {hold_id}'s settlement claim answers {told.status} {told.captured}, "
                    f"released {told.released}; its {kind.__name__} records "
                    + (f"captured {recorded.captured}, " if kind is HoldCaptured else "")
                    + f"released {recorded.released}"
                )
            else:
                continue
            self.findings.append(
                Finding(
                    kind="claim-mismatch",
                    account_id=account_id,
                    detail=f"{problem}: its capture, release and expiry, their retries and its "
                    "reads are answered so",
                )
            )
        for account_id, settled in part.settled_holds.items():
            if account_id in unreplayed:
                continue
            for hold_id, recorded in settled.items():
                if (account_id, hold_id) not in claimed:
                    self.findings.append(
                        Finding(
                            kind="claim-mismatch",
                            account_id=account_id,
                            detail=f"hold {hold_id} was {recorded.status} and no claim records "
                            "its settlement: its reads and the retries of its capture, release "
                            "and expiry are answered that it was never placed",
                        )
                    )

    def _check_purchase_answers(self, part: Part) -> None:
        """A purchase's key answers a retry with where to pay: a session of the key's account,
        at the address its CheckoutRequested recorded (another account's would be paid for
        and credit that account)."""
        sessions = {s.session_id: s for s in part.sessions}
        for scope, key, response in self.purchase_claims:
            account_id = scope.removeprefix("purchase/")
            try:
                answer = msgspec.json.decode(response, type=CheckoutStarted)
            except msgspec.DecodeError as error:
                problem = f"cannot be read ({error})"
            else:
                session = sessions.get(answer.session_id)
                if session is None:
                    problem = f"names session {answer.session_id}, which was never requested"
                elif session.account_id != account_id:
                    problem = f"names session {answer.session_id}, {session.account_id}'s"
                elif session.checkout_url != answer.checkout_url:
                    problem = (
                        f"sends it to pay session {answer.session_id} at "
                        f"{answer.checkout_url}, not at {session.checkout_url}"
                    )
                else:
                    continue
            self.findings.append(
                Finding(
                    kind="claim-mismatch",
                    account_id=account_id,
                    detail=f"the answer kept for purchase key {key!r} {problem}: a retry "
                    "of the key is given it",
                )
            )

    def _check_account_rows(self, part: Part, view: str) -> None:
        """Compare a view's row per account, field by field, with the replay at its position."""
        expected = dict(part.figures.get(view, {}))
        for row in self.views[view]:
            want = expected.pop(row["account_id"], None)
            if want is None:
                self._view_finding(view, row["account_id"], "a row for no account")
                continue
            for field in row.keys():  # noqa: SIM118 (a Record iterates its values)
                if field != "account_id" and row[field] != getattr(want, field):
                    self._view_finding(
                        view,
                        row["account_id"],
                        f"{field} is {row[field]} in the view, {getattr(want, field)} replayed",
                    )
        for account_id in expected:
            self._view_finding(view, account_id, "the account is missing from the view")

    def _check_purchases_view(self, part: Part) -> None:
        expected: dict[str, tuple[str, PurchaseAt | None]] = dict(part.purchase_rows)
        fields = PurchaseAt.__struct_fields__
        for row in self.views["purchases"]:
            account_id, want = expected.pop(row["session_id"], (row["account_id"], None))
            if want is None:
                self._view_finding(
                    "purchases", account_id, f"session {row['session_id']} was never requested"
                )
                continue
            if row["account_id"] != account_id:
                self._view_finding(
                    "purchases",
                    account_id,
                    f"session {row['session_id']} is account {row['account_id']}'s in the view",
                )
            for field in fields:
                if row[field] != getattr(want, field):
                    self._view_finding(
                        "purchases",
                        account_id,
                        f"session {row['session_id']}: {field} is {row[field]} in the view, "
                        f"{getattr(want, field)} replayed",
                    )
        for session_id, (account_id, _) in expected.items():
            self._view_finding("purchases", account_id, f"session {session_id} is missing")

    def _check_statement_view(self, part: Part) -> None:
        expected = dict(part.figures.get("statement", {}))
        for row in self.views["statement"]:
            want = expected.pop(row["account_id"], None)
            if want is None:
                self._view_finding("statement", row["account_id"], "lines for no account")
            elif row["lines"] != want.statement_lines:
                self._view_finding(
                    "statement",
                    row["account_id"],
                    f"{row['lines']} lines in the view, {want.statement_lines} replayed",
                )
            elif row["digest"] != want.statement_digest:
                self._view_finding(
                    "statement",
                    row["account_id"],
                    f"its {row['lines']} lines are not the replay's: a line's amount, buckets, "
                    "type, time or description differs",
                )
        for account_id in expected:
            self._view_finding("statement", account_id, "the account has no lines")

    def _check_holds_view(self, part: Part) -> None:
        self._check_rows("holds", "hold", "hold_id", _HOLD_COLUMNS, part.hold_status)

    def _check_grants_view(self, part: Part) -> None:
        self._check_rows("grants", "grant", "grant_id", _GRANT_COLUMNS, part.grant_rows)

    def _check_rows(
        self,
        view: str,
        what: str,
        key: str,
        columns: tuple[str, ...],
        replayed: dict[str, ViewRow],
    ) -> None:
        """Compare a view's row per hold or grant, column by column, with the replay."""
        expected = dict(replayed)
        for row in self.views[view]:
            found = expected.pop(row[key], None)
            if found is None:
                self._view_finding(view, "", f"{what} {row[key]} was never made")
                continue
            account_id, values, _ = found
            for column, value in zip(columns, values, strict=True):
                if row[column] != value:
                    self._view_finding(
                        view,
                        account_id,
                        f"{what} {row[key]}: {column} is {_plain(row[column])} in the view, "
                        f"{_plain(value)} replayed",
                    )
        for missing, (account_id, _, _) in expected.items():
            self._view_finding(view, account_id, f"{what} {missing} is missing")

    def _view_finding(self, view: str, account_id: str, detail: str) -> None:
        self.findings.append(
            Finding(
                kind=f"{view}-view",
                account_id=account_id,
                detail=f"{detail} (view at position {self.positions.get(view, 0)})",
            )
        )


def _plain(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _finding_order(finding: Finding) -> tuple[Any, ...]:
    """By position (findings with none last), then by every field: the same for any --jobs."""
    return (
        finding.position is None,
        finding.position or 0,
        finding.stream_id or "",
        finding.version or 0,
        finding.kind,
        finding.account_id or "",
        finding.detail,
    )


async def verify(
    pool: asyncpg.Pool,
    on_progress: Callable[[int], None] = lambda _: None,
    checkpoints: Sequence[CheckpointAudit] = (),
    *,
    jobs: int = 1,
    database_url: str | None = None,
    max_time_skew: float = MAX_TIME_SKEW_SECONDS,
) -> Report:
    """Run the whole audit in one consistent, read-only snapshot.

    Each of ``checkpoints`` also sees every event and adds what disagrees with it.
    With ``jobs`` > 1 the streams are replayed by that many processes, which
    connect to ``database_url`` (the pool's database, as the service's role).
    An event whose own time is more than ``max_time_skew`` seconds from its recorded time
    is a ``time-far-from-record`` finding (``math.inf``: not judged, for a history written
    with a clock set apart from the database's, as tests and the simulation write).
    """
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        verifier = Verifier(
            connection,
            checkpoints,
            jobs=jobs,
            database_url=database_url,
            max_time_skew=max_time_skew,
        )
        return await verifier.run(on_progress)

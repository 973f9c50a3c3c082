"""Every benchmark of the performance issue, each against a baseline from the same run.

One fresh database ``ledger_bench_<random>`` (on ``DATABASE_URL``'s server, else a
throw-away embedded PostgreSQL), dropped at the end:

1. N real ledger events (``bench.generate``) plus one account with a long history
   (``bench.history``), appended through ``EventStore.append``;
2. a raw cursor read of every event, ``ledger projections rebuild`` and
   ``ledger audit verify`` (``bench.replay``);
3. the Stripe stand-in, ``ledger serve`` and the bare baseline app
   (``bench.baseline_app``), each a process of its own (``bench.service``); 1,000
   accounts opened over HTTP; load from ``bench.load`` processes (wrk), interleaved
   with the baselines: spend latency on the long account against 10-event accounts,
   spends (with the projection lag and the service's memory sampled meanwhile),
   webhook deliveries, ``GET /v1/credits``.

Prints one markdown table. ``--quick`` shrinks everything for a smoke run.

    python -m bench.run_all [--quick] [--events N] [--database-url URL] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench import generate, history, profile_summary, replay, service
from bench.postgres import bench_database, postgres_server
from ledger.domain.events import CreditsSpent, topics_of
from ledger.store.migrate import set_up

SPEND_TOPICS = topics_of(CreditsSpent)
BENCH_ACCOUNT = "acct_bench_{:04d}"
SHORT_ACCOUNT = "acct_short_{:03d}"
SHORT_ACCOUNTS = 100
LONG_ACCOUNT = "acct_long"
CREDITS_TOKENS = 4
LAG_POLL_SECONDS = 0.005
MB = 1024 * 1024


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- load processes ------------------------------------------------------------------------


async def load(*args: str) -> dict[str, Any]:
    """Run ``python -m bench.load ARGS`` and return its JSON line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.load {args[0]} failed: {err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@dataclass
class CpuWindow:
    """CPU used by one process and by the whole machine over a stretch of time."""

    pid: int
    started: float = 0.0
    process_start: float = 0.0
    machine_start: Any = None
    process_percent: float = 0.0
    machine_percent: float = 0.0

    def __enter__(self) -> CpuWindow:
        self.started = time.perf_counter()
        self.process_start = self._process_seconds()
        self.machine_start = psutil.cpu_times()
        return self

    def __exit__(self, *_: object) -> None:
        wall = time.perf_counter() - self.started
        self.process_percent = 100 * (self._process_seconds() - self.process_start) / wall
        end = psutil.cpu_times()
        busy = (
            sum(end)
            - end.idle
            - end.iowait
            - (sum(self.machine_start) - self.machine_start.idle - self.machine_start.iowait)
        )
        total = sum(end) - sum(self.machine_start)
        self.machine_percent = 100 * busy / total * (os.cpu_count() or 1) if total else 0.0

    def _process_seconds(self) -> float:
        try:
            parent = psutil.Process(self.pid)
            times = [parent.cpu_times(), *(c.cpu_times() for c in parent.children(True))]
        except psutil.NoSuchProcess:
            return 0.0
        return sum(t.user + t.system for t in times)


async def transactions(pool: asyncpg.Pool) -> int:
    """Committed transactions in this database so far (statistics flush within ~1 s)."""
    await asyncio.sleep(1.1)
    return int(
        await pool.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    )


@dataclass
class Phase:
    """One measured load: the load generator's result and what the server used."""

    result: dict[str, Any]
    server_cpu: float
    machine_cpu: float
    transactions_per_request: float = 0.0

    @property
    def rate(self) -> float:
        return float(self.result["rate"])

    def latency_ms(self, key: str) -> float:
        return float(self.result["latency_us"][key]) / 1000


def combine(phases: list[Phase]) -> Phase:
    """Rounds of one load, added up (latency: the median of the rounds' percentiles)."""
    requests = sum(p.result["requests"] for p in phases)
    duration = sum(p.result["duration_us"] for p in phases)
    statuses: dict[str, int] = {}
    for p in phases:
        for status, count in p.result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    result = {
        "requests": requests,
        "duration_us": duration,
        "rate": requests / (duration / 1e6),
        "latency_us": {
            key: statistics.median(p.result["latency_us"][key] for p in phases)
            for key in ("p50", "p90", "p99", "max", "mean")
        },
        "statuses": statuses,
        "non_2xx": sum(p.result["non_2xx"] for p in phases),
        "socket_errors": sum(p.result["socket_errors"] for p in phases),
        "wraps": sum(p.result.get("wraps", 0) for p in phases),
    }
    return Phase(
        result,
        statistics.fmean(p.server_cpu for p in phases),
        statistics.fmean(p.machine_cpu for p in phases),
        statistics.fmean(p.transactions_per_request for p in phases),
    )


async def measured(
    server: service.Server,
    pool: asyncpg.Pool,
    *args: str,
    before_load: Callable[[], None] | None = None,
    after_load: Callable[[], Awaitable[None]] | None = None,
) -> Phase:
    """One load run; ``after_load`` runs before the transactions are counted again."""
    before = await transactions(pool)
    if before_load is not None:
        before_load()
    with CpuWindow(server.pid) as cpu:
        result = await load(*args)
    if after_load is not None:
        await after_load()
    after = await transactions(pool)
    return Phase(
        result,
        cpu.process_percent,
        cpu.machine_percent,
        (after - before) / result["requests"] if result["requests"] else 0.0,
    )


# --- projection lag and memory, sampled while spends run ------------------------------------


@dataclass
class Sampler:
    """Polls the views' positions (with the server's clock) and the service's memory."""

    pool: asyncpg.Pool
    server: service.Server
    times: list[datetime] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    rss_peak: int = 0
    rss_samples: list[int] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    by_view: dict[str, list[int]] = field(default_factory=lambda: {"balances": [], "statement": []})

    def mark(self) -> None:
        """Remember the latest poll (a load starts or stops)."""
        self.marks.append(len(self.positions) - 1)

    def advance_rates(self, view: str) -> list[float]:
        """Events/s ``view`` advanced between each pair of marks (while a load ran)."""
        positions = self.by_view[view]
        rates = []
        for start, end in zip(self.marks[::2], self.marks[1::2], strict=False):
            seconds = (self.times[end] - self.times[start]).total_seconds()
            if seconds > 0:
                rates.append((positions[end] - positions[start]) / seconds)
        return rates

    async def _positions(self) -> None:
        async with self.pool.acquire() as connection:
            while True:
                row: Any = await connection.fetchrow(
                    """SELECT clock_timestamp(),
                              max(position) FILTER (WHERE name = 'balances'),
                              max(position) FILTER (WHERE name = 'statement')
                       FROM projection_positions"""
                )
                balances, statement = int(row[1] or 0), int(row[2] or 0)
                self.times.append(row[0])
                self.positions.append(min(balances, statement))
                self.by_view["balances"].append(balances)
                self.by_view["statement"].append(statement)
                await asyncio.sleep(LAG_POLL_SECONDS)

    async def _memory(self) -> None:
        while True:
            rss = await asyncio.to_thread(self.server.rss_bytes)
            self.rss_samples.append(rss)
            self.rss_peak = max(self.rss_peak, rss)
            await asyncio.sleep(0.25)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        tasks = [asyncio.create_task(self._positions()), asyncio.create_task(self._memory())]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def until_caught_up(self, head: int, limit: float = 300.0) -> float:
        """Wait until both views have applied everything up to ``head``; return the wait."""
        started = time.perf_counter()
        while not self.positions or self.positions[-1] < head:
            if time.perf_counter() - started > limit:
                raise RuntimeError(f"the projector did not reach position {head} in {limit} s")
            await asyncio.sleep(0.02)
        return time.perf_counter() - started

    def lags(self, events: list[tuple[int, datetime]], view: str | None = None) -> list[float]:
        """Seconds from each event's recorded_at to the first poll that saw it in both views
        (or in ``view``). Positions only grow, so the polls are sorted by position."""
        positions = self.positions if view is None else self.by_view[view]
        found = []
        for position, recorded_at in events:
            index = bisect.bisect_left(positions, position)
            if index < len(positions):
                found.append((self.times[index] - recorded_at).total_seconds())
        return found


async def head(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM stored_events"))


async def view_positions(pool: asyncpg.Pool) -> int:
    """How far both views have got (a view without a position row yet is at 0)."""
    value = await pool.fetchval(
        """SELECT least(coalesce(max(position) FILTER (WHERE name = 'balances'), 0),
                        coalesce(max(position) FILTER (WHERE name = 'statement'), 0))
           FROM projection_positions"""
    )
    return int(value or 0)


async def wait_for_projector(pool: asyncpg.Pool, limit: float = 600.0) -> float:
    """Wait until both views have applied everything stored now; return the wait."""
    target = await head(pool)
    started = time.perf_counter()
    while await view_positions(pool) < target:
        if time.perf_counter() - started > limit:
            raise RuntimeError("the projector is not catching up")
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


async def spends_between(pool: asyncpg.Pool, after: int, until: int) -> list[tuple[int, datetime]]:
    rows = await pool.fetch(
        """SELECT notification_id, recorded_at FROM stored_events
           WHERE notification_id > $1 AND notification_id <= $2 AND topic = ANY($3::text[])""",
        after,
        until,
        SPEND_TOPICS,
    )
    return [(row[0], row[1]) for row in rows]


def percentile(values: list[float], percent: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


# --- profiling (optional) ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def profiled(folder: Path | None, name: str, pid: int, seconds: int) -> AsyncIterator[None]:
    """py-spy on ``pid`` for ``seconds`` while the block runs (if --profile was given)."""
    if folder is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    raw = folder / f"{name}.txt"
    process = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
        "--format", "raw", "--output", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        await process.wait()
        await asyncio.to_thread(_write_summary, raw, folder / f"{name}-top.txt")


def _write_summary(raw: Path, summary: Path) -> None:
    if raw.exists():
        summary.write_text(profile_summary.summarise(raw))
        progress(f"profile: {raw}, top functions in {summary}")


# --- the run -------------------------------------------------------------------------------


@dataclass
class Options:
    events: int
    history: int
    accounts: int
    connections: int
    seconds: int
    rounds: int
    warmup: int
    latency_requests: int
    rebuild_seconds: float | None
    profile: Path | None


@dataclass
class Results:
    started: float
    server_version: str = ""
    source: str = ""
    synchronous_commit: str = ""
    fsync: str = ""
    generated: generate.Generated | None = None
    history_seconds: float = 0.0
    replay: dict[str, replay.Timed] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    spend: Phase | None = None
    insert: Phase | None = None
    webhook: Phase | None = None
    credits: Phase | None = None
    hello: Phase | None = None
    lags: list[float] = field(default_factory=list)
    drain_seconds: list[float] = field(default_factory=list)
    catchup_seconds: float = 0.0
    view_rates: dict[str, list[float]] = field(default_factory=dict)
    view_lags: dict[str, list[float]] = field(default_factory=dict)
    rss_idle: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    setup_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def prepare(url: str, results: Results) -> None:
    connection = await asyncpg.connect(url)
    try:
        await set_up(connection)
        results.server_version = await connection.fetchval("SHOW server_version")
        results.synchronous_commit = await connection.fetchval("SHOW synchronous_commit")
        results.fsync = await connection.fetchval("SHOW fsync")
    finally:
        await connection.close()
    if results.synchronous_commit != "on":
        results.notes.append("WARNING: synchronous_commit is not on: commits are not durable")


async def replay_phase(url: str, data_dir: Path, options: Options, results: Results) -> None:
    progress(f"generating {options.events:,} ledger events")
    results.generated = await generate.generate(url, options.events)
    progress(f"generated {results.generated.events:,} events in {results.generated.seconds:.1f} s")
    results.setup_seconds["vacuum after load"] = await replay.vacuum_analyze(url)
    progress("raw read, ledger projections rebuild, ledger audit verify")
    results.replay = await replay.run(url, data_dir, options.rebuild_seconds)
    progress(
        "replayed: "
        + ", ".join(f"{k} {t.rate:,.0f}/s in {t.seconds:.1f} s" for k, t in results.replay.items())
    )
    verify = results.replay["verify"]
    if verify.detail["findings"] or verify.detail["exit_code"]:
        results.notes.append(
            f"WARNING: ledger audit verify found {verify.detail['findings']} problem(s):"
            f" {verify.detail['first_findings']}"
        )


async def http_phase(
    url: str, data_dir: Path, logs: Path, options: Options, results: Results
) -> None:
    progress(f"{LONG_ACCOUNT} with {options.history:,} events")
    results.history_seconds = await history.make_long_account(url, LONG_ACCOUNT, options.history)
    # Only the events: after an ANALYZE of the still-empty views, the projector's statement
    # view caught up about ten times slower here, until `ledger serve` was restarted.
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("ANALYZE stored_events")
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(url, min_size=2, max_size=3)
    try:
        async with (
            service.stripe_standin(logs) as standin,
            service.ledger_service(url, standin.url, data_dir, logs) as ledger,
            service.baseline_app(url, logs) as baseline,
        ):
            await http_benchmarks(pool, ledger, baseline, url, data_dir, options, results)
    finally:
        await pool.close()


async def http_benchmarks(
    pool: asyncpg.Pool,
    ledger: service.Server,
    baseline: service.Server,
    url: str,
    data_dir: Path,
    options: Options,
    results: Results,
) -> None:
    results.catchup_seconds = await wait_for_projector(pool) + ledger.ready_after
    progress(
        f"the projector caught up with {LONG_ACCOUNT} {results.catchup_seconds:.1f} s after"
        " `ledger serve` was started"
    )
    started = time.perf_counter()

    def step(name: str) -> None:
        nonlocal started
        results.setup_seconds[name] = time.perf_counter() - started
        started = time.perf_counter()

    token = await service.create_token(url, data_dir, "ledger:write")
    step("ledger:write token")
    accounts = [BENCH_ACCOUNT.format(n) for n in range(options.accounts)]
    await service.open_accounts(ledger.url, token, accounts, allowance=1_000_000_000)
    shorts = [SHORT_ACCOUNT.format(n) for n in range(SHORT_ACCOUNTS)]
    await service.open_accounts(ledger.url, token, shorts, allowance=1_000_000)
    step("accounts opened")
    await service.spend_each(ledger.url, token, shorts, 9)  # 10 events each
    step("10-event accounts")
    credit_tokens = await asyncio.gather(
        *(
            service.create_token(url, data_dir, "credits", account_id=accounts[n])
            for n in range(CREDITS_TOKENS)
        )
    )
    step("credits tokens")
    await wait_for_projector(pool)
    step("views caught up")
    progress("set up: " + ", ".join(f"{k} {v:.1f} s" for k, v in results.setup_seconds.items()))
    results.rss_idle = ledger.rss_bytes()

    # Spend latency: the long account against 10-event accounts, one request at a time.
    progress("spend latency: long history against 10-event accounts")
    results.latency = await load(
        "latency", "--url", ledger.url, "--token", token,
        "--account", LONG_ACCOUNT, "--account", SHORT_ACCOUNT.replace("{:03d}", "%03d") + f":{SHORT_ACCOUNTS}",
        "--requests", str(options.latency_requests),
    )  # fmt: skip
    await wait_for_projector(pool)

    # Spends against the bare insert, interleaved; lag and memory sampled meanwhile.
    connections = ["--connections", str(options.connections), "--token", token]
    spend_args = ["post", "--url", ledger.url, "--path", "/v1/accounts/acct_bench_%04d/spend",
                  "--accounts", str(options.accounts), *connections]  # fmt: skip
    insert_args = ["post", "--url", baseline.url, "--path", "/insert", *connections]
    progress("warming up: spends and bare inserts")
    await load(*insert_args, "--seconds", str(options.warmup))
    await load(*spend_args, "--seconds", str(options.warmup))
    await wait_for_projector(pool)
    seconds = ["--seconds", str(options.seconds)]
    spends: list[Phase] = []
    inserts: list[Phase] = []
    sampler = Sampler(pool, ledger)
    for number in range(1, options.rounds + 1):
        inserts.append(await measured(baseline, pool, *insert_args, *seconds))
        progress(f"round {number}: bare insert {inserts[-1].rate:,.0f}/s")
        before = await head(pool)
        heads: list[int] = []

        async def drain(heads: list[int] = heads) -> None:
            sampler.mark()
            heads.append(await head(pool))
            results.drain_seconds.append(await sampler.until_caught_up(heads[-1]))

        profile = options.profile if number == 1 else None
        async with (
            sampler.running(),
            profiled(profile, "spend", ledger.pid, options.seconds - 1),
        ):
            await asyncio.sleep(0.05)  # a first poll
            spends.append(
                await measured(
                    ledger, pool, *spend_args, *seconds, before_load=sampler.mark, after_load=drain
                )
            )
        stored = await spends_between(pool, before, heads[-1])
        results.lags += sampler.lags(stored)
        for view in ("balances", "statement"):
            results.view_lags.setdefault(view, []).extend(sampler.lags(stored, view))
        progress(
            f"round {number}: spend {spends[-1].rate:,.0f}/s; views caught up"
            f" {results.drain_seconds[-1]:.2f} s after the load stopped"
        )
    results.spend, results.insert = combine(spends), combine(inserts)
    results.rss_peak = sampler.rss_peak
    results.view_rates = {view: sampler.advance_rates(view) for view in sampler.by_view}
    results.rss_after = ledger.rss_bytes()

    # Webhook deliveries: new paid sessions, credited from their metadata.
    progress("webhook deliveries")
    bound = max(results.insert.rate, 1000.0) * 1.5
    hook_args = ["webhook", "--url", ledger.url, "--accounts", str(options.accounts),
                 "--connections", str(options.connections), "--secret", service.WEBHOOK_SECRET]  # fmt: skip
    await load(
        *hook_args,
        "--seconds",
        str(options.warmup),
        "--count",
        str(int(bound * options.warmup) + 100),
    )
    await wait_for_projector(pool)
    total = options.seconds * options.rounds
    async with profiled(options.profile, "webhook", ledger.pid, total - 1):
        results.webhook = await measured(
            ledger,
            pool,
            *hook_args,
            "--seconds",
            str(total),
            "--count",
            str(int(bound * total) + 100),
        )
    await wait_for_projector(pool)

    # GET /v1/credits against a bare JSON endpoint.
    progress("GET /v1/credits and the bare JSON endpoint")
    tokens = [arg for t in credit_tokens for arg in ("--token", t)]
    credits_args = ["get", "--url", ledger.url, "--path", "/v1/credits", "--connections",
                    str(options.connections), *tokens]  # fmt: skip
    hello_args = ["get", "--url", baseline.url, "--path", "/hello", "--connections",
                  str(options.connections), *tokens]  # fmt: skip
    await load(*hello_args, "--seconds", str(options.warmup))
    await load(*credits_args, "--seconds", str(options.warmup))
    hellos: list[Phase] = []
    credits: list[Phase] = []
    for _ in range(options.rounds):
        hellos.append(await measured(baseline, pool, *hello_args, *seconds))
        async with profiled(
            options.profile if not credits else None, "credits", ledger.pid, options.seconds - 1
        ):
            credits.append(await measured(ledger, pool, *credits_args, *seconds))
    results.hello, results.credits = combine(hellos), combine(credits)


# --- the report ------------------------------------------------------------------------------


def ratio_cell(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "n/a"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(options: Options, results: Results, wall: float) -> str:
    spend, insert, hook = results.spend, results.insert, results.webhook
    credits, hello = results.credits, results.hello
    assert spend is not None
    assert insert is not None
    assert hook is not None
    assert credits is not None
    assert hello is not None
    raw, verify, rebuild = (results.replay[k] for k in ("raw", "verify", "rebuild"))
    long_lat, short_lat = results.latency["groups"]
    lag_p99 = 1000 * percentile(results.lags, 99)
    lag_p50 = 1000 * percentile(results.lags, 50)
    lag_max = 1000 * max(results.lags) if results.lags else float("nan")

    def rate(phase: Phase) -> str:
        return (
            f"{phase.rate:,.0f}/s, p50 {phase.latency_ms('p50'):.1f} ms,"
            f" p99 {phase.latency_ms('p99'):.1f} ms"
        )

    lat_ratio = long_lat["p50_ms"] / short_lat["p50_ms"]
    n = raw.events
    complete = rebuild.detail["complete"]
    sampled = "" if complete else f", timed {rebuild.detail['limit']:g} s"
    estimated = "" if complete else " for all, estimated"
    rows = [
        "| benchmark | measured | baseline, same run | ratio | target | met |",
        "|---|---|---|---:|---|---|",
        f"| spend commands/s over HTTP ({options.connections} clients, {options.accounts:,}"
        f" accounts) | {rate(spend)} | bare Litestar+asyncpg INSERT+COMMIT: {rate(insert)}"
        f" | {ratio_cell(spend.rate, insert.rate)} | ≥ 1.0x | {verdict(spend.rate >= insert.rate)} |",
        f"| verified webhook deliveries/s (checkout.session.completed, new sessions) |"
        f" {rate(hook)} | the same bare INSERT endpoint: {insert.rate:,.0f}/s"
        f" | {ratio_cell(hook.rate, insert.rate)} | ≥ 1.0x | {verdict(hook.rate >= insert.rate)} |",
        f"| `GET /v1/credits`/s ({CREDITS_TOKENS} credits tokens) | {rate(credits)} |"
        f" bare Litestar JSON, no database: {rate(hello)} | {ratio_cell(credits.rate, hello.rate)}"
        f" | ≥ 0.5x | {verdict(credits.rate >= 0.5 * hello.rate)} |",
        f"| projection lag under the spend load (recorded_at → both `balances` and"
        f" `statement` past it; {len(results.lags):,} spends) | p99 {lag_p99:.0f} ms"
        f" (p50 {lag_p50:.0f}, max {lag_max:.0f}) | — | — | p99 ≤ 100 ms | {verdict(lag_p99 <= 100)} |",
        f"| `ledger audit verify` events/s ({n:,} events) | {verify.rate:,.0f}/s"
        f" ({verify.detail['findings']} findings) | raw asyncpg cursor read: {raw.rate:,.0f}/s"
        f" | {ratio_cell(verify.rate, raw.rate)} | ≥ 0.5x | {verdict(verify.rate >= 0.5 * raw.rate)} |",
        f"| `ledger projections rebuild` events/s ({n:,} events,"
        f" {len(rebuild.detail['views'])} views in one pass{sampled}) |"
        f" {rebuild.rate:,.0f}/s ({rebuild.seconds:,.0f} s{estimated}) | raw asyncpg cursor read:"
        f" {raw.rate:,.0f}/s"
        f" | {ratio_cell(rebuild.rate, raw.rate)} | ≥ 0.5x | {verdict(rebuild.rate >= 0.5 * raw.rate)} |",
        f"| spend latency, one client, account with {options.history:,} events |"
        f" p50 {long_lat['p50_ms']:.2f} ms, p99 {long_lat['p99_ms']:.2f} ms | 10-event accounts:"
        f" p50 {short_lat['p50_ms']:.2f} ms, p99 {short_lat['p99_ms']:.2f} ms"
        f" | {lat_ratio:.2f}x (p50) | ≤ 1.2x | {verdict(lat_ratio <= 1.2)} |",
        f"| service memory under the spend load (RSS of `ledger serve` and children) |"
        f" peak {results.rss_peak / MB:,.0f} MB (idle {results.rss_idle / MB:,.0f} MB, after"
        f" {results.rss_after / MB:,.0f} MB) | — | — | report | — |",
    ]
    generated = results.generated
    assert generated is not None
    views = ", ".join(rebuild.detail["views"])
    non_2xx = {
        name: phase.result["non_2xx"] + phase.result["socket_errors"]
        for name, phase in (
            ("spend", spend),
            ("insert", insert),
            ("webhook", hook),
            ("credits", credits),
            ("hello", hello),
        )
    }
    lines = [
        "## Benchmarks of the performance issue",
        "",
        *rows,
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, uvicorn"
        f" (asyncio loop, h11); PostgreSQL {results.server_version} from {results.source};"
        f" synchronous_commit={results.synchronous_commit}, fsync={results.fsync}.",
        f"Load: wrk, 1 thread, {options.connections} connections, {options.rounds} rounds of"
        f" {options.seconds} s per load, interleaved with its baseline, after {options.warmup} s"
        " of warm-up; latency percentiles are wrk's, the median over rounds.",
        f"Server CPU (one process = at most 100 %): spend {spend.server_cpu:.0f} %, bare insert"
        f" {insert.server_cpu:.0f} %, webhooks {hook.server_cpu:.0f} %, credits"
        f" {credits.server_cpu:.0f} %, hello {hello.server_cpu:.0f} %; whole machine during"
        f" spends {spend.machine_cpu:.0f} % of {100 * (os.cpu_count() or 1)} %.",
        f"PostgreSQL transactions per request: spend {spend.transactions_per_request:.1f},"
        f" bare insert {insert.transactions_per_request:.1f}, webhook"
        f" {hook.transactions_per_request:.1f}, credits {credits.transactions_per_request:.1f}.",
        "During the spend load (each round) the views advanced "
        + ", ".join(
            f"{view} {' and '.join(f'{r:,.0f}' for r in rates)}"
            for view, rates in results.view_rates.items()
        )
        + f" events/s while spends were stored at {spend.rate:,.0f}/s; both caught up"
        f" {', '.join(f'{s:.1f}' for s in results.drain_seconds)} s after each round ended."
        " Lag p99 by view: "
        + ", ".join(
            f"{view} {1000 * percentile(lags, 99):,.0f} ms"
            for view, lags in results.view_lags.items()
        )
        + ".",
        f"Replay database: {generated.events:,} events generated in {generated.seconds:.1f} s"
        f" ({generated.rate:,.0f}/s; {generated.accounts:,} accounts, {generated.sessions:,}"
        f" paid sessions); views rebuilt in one pass: {views}"
        + ("" if complete else " (stopped when timed out; verify checked no views)")
        + f"; `ledger audit verify` took {verify.detail['wall_seconds']:.1f} s as a command.",
        f"Service database: {LONG_ACCOUNT} ({options.history:,} events) appended in"
        f" {results.history_seconds:.1f} s; the service's projector then caught up with it in"
        f" {results.catchup_seconds:.1f} s ({options.history / results.catchup_seconds:,.0f}"
        f" events/s, {len(rebuild.detail['views'])} views).",
        f"Non-2xx answers or socket errors: {non_2xx}; webhook deliveries reused:"
        f" {hook.result['wraps']}.",
        f"Whole run: {wall / 60:.1f} min.",
        *results.notes,
    ]
    return "\n".join(lines)


async def benchmark(options: Options, server_url: str, source: str) -> str:
    results = Results(started=time.perf_counter(), source=source)
    with tempfile.TemporaryDirectory(prefix="ledger-bench-run-") as folder:
        data_dir, logs = Path(folder) / "data", Path(folder)
        async with bench_database(server_url) as url:
            await prepare(url, results)
            await replay_phase(url, data_dir, options, results)
        async with bench_database(server_url) as url:
            await prepare(url, results)
            await http_phase(url, data_dir, logs, options, results)
    return report(options, results, time.perf_counter() - results.started)


def parse_args(argv: list[str] | None = None) -> tuple[Options, str | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_all",
        description="Run every benchmark of the performance issue against baselines measured"
        " in the same run; print one markdown table.",
    )
    parser.add_argument("--quick", action="store_true", help="small and short: a smoke run")
    parser.add_argument(
        "--events", type=int, help="events to replay (default 1,000,000; quick 100,000)"
    )
    parser.add_argument(
        "--history", type=int, help="events of the long account (default 100,000; quick 10,000)"
    )
    parser.add_argument(
        "--seconds", type=int, help="measured seconds per round (default 6; quick 3)"
    )
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds per load (default 2; quick 1)"
    )
    parser.add_argument("--connections", type=int, default=64, help="HTTP clients (default 64)")
    parser.add_argument(
        "--accounts", type=int, default=1000, help="accounts spent on (default 1,000)"
    )
    parser.add_argument(
        "--full-rebuild",
        action="store_true",
        help="run `ledger projections rebuild` to the end (slow: one or two round trips per"
        " event per view) instead of timing each view for 30 s (quick: 10 s)",
    )
    parser.add_argument(
        "--profile", type=Path, help="also record py-spy profiles of the service here"
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to create the benchmark's database on (default:"
        " DATABASE_URL, else a throw-away embedded PostgreSQL)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    options = Options(
        events=args.events or (100_000 if quick else 1_000_000),
        history=args.history or (10_000 if quick else 100_000),
        accounts=args.accounts,
        connections=args.connections,
        seconds=args.seconds or (3 if quick else 6),
        rounds=args.rounds or (1 if quick else 2),
        warmup=1 if quick else 2,
        latency_requests=100 if quick else 300,
        rebuild_seconds=None if args.full_rebuild else (10.0 if quick else 30.0),
        profile=args.profile,
    )
    if options.accounts > 10_000:
        parser.error("--accounts is at most 10,000 (account ids have four digits)")
    return options, args.database_url


def main(argv: list[str] | None = None) -> None:
    options, database_url = parse_args(argv)
    origin = "--database-url"
    if not database_url:
        database_url, origin = os.environ.get("DATABASE_URL"), "DATABASE_URL"
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench does it as root)")
    with postgres_server(database_url, origin) as (server_url, source):
        print(asyncio.run(benchmark(options, server_url, source)), flush=True)


if __name__ == "__main__":
    main()

"""The service over HTTP on one configuration, against bare baselines in the same run.

On a fresh database: ``acct_long`` with N events (``bench.history``); then, each in a
process of its own, the Stripe stand-in, ``ledger serve`` (API and projector) and the
bare baseline app three times, under uvicorn + uvloop + httptools, under granian and
under uvicorn with ``ledger serve``'s own protocol (``bench.baseline_app``); 1,000
accounts and 100 ten-event accounts opened over HTTP.
Then, with wrk at 64 connections (``bench.load``), after warm-ups:

* spend latency, one request at a time: the long account against 10-event accounts;
* rounds of: bare INSERT on uvicorn, bare INSERT on granian, spends (projection lag
  and memory sampled meanwhile);
* webhook deliveries (paid sessions, their ``CheckoutRequested`` recorded first by
  ``bench.checkouts``), as long as all the spend rounds;
* rounds of: bare JSON on uvicorn, on granian and on uvicorn with the protocol ``ledger
  serve`` runs (api/http_writes.py: answers to reads sent at the end of the loop's turn),
  then ``GET /v1/credits``;
* with ``--profile`` (on the first configuration, or each with ``--profile-each``): one
  more load each of spends, webhooks, credits, bare INSERT and bare JSON with py-spy on
  the serving process (never a measured load).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench import checkouts, history, service
from bench.measure import Phase, combine, load, measured
from bench.options import Options
from bench.postgres import bench_database
from bench.profiling import profiled
from bench.replay_phase import prepare
from bench.results import (
    CREDITS,
    HELLO,
    HELLO_GRANIAN,
    HELLO_PER_TURN,
    INSERT,
    INSERT_GRANIAN,
    SERVICE,
    SPEND,
    WEBHOOK,
    Results,
)
from bench.sampling import Sampler, head, spends_between, wait_for_projector
from ledger.store.event_store import EventStore

BENCH_ACCOUNT = "acct_bench_{:04d}"
SHORT_ACCOUNT = "acct_short_{:03d}"
SHORT_ACCOUNTS = 100
GRANTS_ACCOUNT = "acct_grants_{:02d}"
GRANTS_ACCOUNTS = 10
GRANTS_EACH = 50
LONG_ACCOUNT = "acct_long"
CREDITS_TOKENS = 4
BASELINES = {
    INSERT: "uvicorn",
    INSERT_GRANIAN: "granian",
    HELLO: "uvicorn",
    HELLO_GRANIAN: "granian",
    HELLO_PER_TURN: service.READS_PER_TURN,
}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """What every scenario of one configuration's HTTP phase shares."""

    pool: asyncpg.Pool
    ledger: service.Server
    baselines: dict[str, service.Server]
    """By stack: ``uvicorn``, ``granian``, ``service.READS_PER_TURN``."""
    url: str
    data_dir: Path
    options: Options
    results: Results
    token: str = ""
    credit_tokens: list[str] = field(default_factory=list)

    def seconds(self, seconds: int | None = None) -> list[str]:
        return ["--seconds", str(seconds or self.options.seconds)]

    def args(self, name: str) -> list[str]:
        """``bench.load`` arguments of a load, without its duration."""
        clients = ["--connections", str(self.options.connections)]
        if name == SPEND:
            return ["post", "--url", self.ledger.url, "--path", "/v1/accounts/acct_bench_%04d/spend",
                    "--accounts", str(self.options.accounts), *clients, "--token", self.token]  # fmt: skip
        if name == CREDITS:
            tokens = [arg for token in self.credit_tokens for arg in ("--token", token)]
            return ["get", "--url", self.ledger.url, "--path", "/v1/credits", *clients, *tokens]
        target = self.baselines[BASELINES[name]].url
        if name in (INSERT, INSERT_GRANIAN):
            return ["post", "--url", target, "--path", "/insert", *clients, "--token", self.token]
        return ["get", "--url", target, "--path", "/hello", *clients, "--token", self.token]

    async def webhook_args(self, seconds: int) -> list[str]:
        """Signed deliveries enough for ``seconds`` at 1.5x the bare insert rate, for
        sessions recorded first, as every real purchase is (``bench.checkouts``)."""
        rate = self.results.phases[INSERT].rate if INSERT in self.results.phases else 0.0
        count = int(max(rate, 1000.0) * 1.5 * seconds) + 100
        deliveries = await checkouts.new_deliveries(
            EventStore(self.pool), self.ledger.url, count, BENCH_ACCOUNT.removesuffix("{:04d}"),
            self.options.accounts, service.WEBHOOK_SECRET,
        )  # fmt: skip
        return [*deliveries, "--connections", str(self.options.connections), *self.seconds(seconds)]

    def server_of(self, name: str) -> service.Server:
        return self.ledger if name in (SPEND, WEBHOOK, CREDITS) else self.baselines[BASELINES[name]]


async def http_phase(data_dir: Path, logs: Path, options: Options, results: Results) -> None:
    """The whole HTTP phase on a database of its own."""
    async with bench_database(results.configuration.server_url) as url:
        await prepare(url, results)
        pool = await asyncpg.create_pool(url, min_size=2, max_size=3)
        try:
            async with (
                service.stripe_standin(logs) as standin,
                service.ledger_service(url, standin.url, data_dir, logs) as ledger,
                service.baseline_app(url, logs, "uvicorn") as on_uvicorn,
                service.baseline_app(url, logs, "granian") as on_granian,
                service.baseline_app(url, logs, service.READS_PER_TURN) as per_turn,
            ):
                baselines = {
                    "uvicorn": on_uvicorn,
                    "granian": on_granian,
                    service.READS_PER_TURN: per_turn,
                }
                await scenarios(Run(pool, ledger, baselines, url, data_dir, options, results))
        finally:
            await pool.close()


async def scenarios(run: Run) -> None:
    run.results.stacks = {
        SERVICE: run.ledger.stack,
        **{stack: server.stack for stack, server in run.baselines.items()},
    }
    progress("stacks: " + "; ".join(f"{k}: {v}" for k, v in run.results.stacks.items()))
    await set_up(run)
    await spend_latency(run)
    await spend_rounds(run)
    await webhooks(run)
    await credit_rounds(run)
    if run.results.profiled:
        assert run.options.profile is not None
        await profiles(run, run.options.profile / run.results.configuration.key)


async def set_up(run: Run) -> None:
    """The long account (straight into the store) while accounts and tokens are made over
    HTTP and the CLI; then the views catch up with all of it. Nothing is measured yet."""
    results = run.results
    progress(f"{LONG_ACCOUNT} with {run.options.history:,} events; accounts and tokens")
    started = time.perf_counter()
    results.history_seconds, _ = await asyncio.gather(
        history.make_long_account(run.url, LONG_ACCOUNT, run.options.history, set_up_first=False),
        set_up_accounts(run),
    )
    written = time.perf_counter()
    # Only the events: after an ANALYZE of the still-empty views, the projector's
    # statement view caught up about ten times slower here, until a restart.
    await run.pool.execute("ANALYZE stored_events")
    await wait_for_projector(run.pool)
    results.catchup_seconds = time.perf_counter() - written
    results.setup_seconds["set-up"] = time.perf_counter() - started
    progress(
        "set up: " + ", ".join(f"{k} {v:.1f} s" for k, v in results.setup_seconds.items())
        + f"; the views caught up {results.catchup_seconds:.1f} s after the last write"
    )  # fmt: skip
    results.rss_idle = run.ledger.rss_bytes()


async def set_up_accounts(run: Run) -> None:
    """Tokens through the CLI (the credits ones while the ten-event accounts are made),
    accounts through the API."""
    started = time.perf_counter()
    run.token = await service.create_token(run.url, run.data_dir, "ledger:write")
    accounts = [BENCH_ACCOUNT.format(n) for n in range(run.options.accounts)]
    await service.open_accounts(run.ledger.url, run.token, accounts, allowance=1_000_000_000)
    credit_tokens = asyncio.gather(
        *(
            service.create_token(run.url, run.data_dir, "credits", account_id=accounts[n])
            for n in range(CREDITS_TOKENS)
        )
    )
    shorts = [SHORT_ACCOUNT.format(n) for n in range(SHORT_ACCOUNTS)]
    await service.open_accounts(run.ledger.url, run.token, shorts, allowance=1_000_000)
    await service.spend_each(run.ledger.url, run.token, shorts, 9)  # 10 events each
    # No allowance: their spends burn grants, choosing among 50 by the declared order.
    granted = [GRANTS_ACCOUNT.format(n) for n in range(GRANTS_ACCOUNTS)]
    await service.open_accounts(run.ledger.url, run.token, granted, allowance=0)
    await service.grant_each(run.ledger.url, run.token, granted, GRANTS_EACH)
    run.credit_tokens = list(await credit_tokens)
    run.results.setup_seconds["accounts and tokens"] = time.perf_counter() - started


async def spend_latency(run: Run) -> None:
    """The long account and accounts with 50 grants against 10-event accounts, one request
    at a time."""
    progress("spend latency: long history and 50 grants against 10-event accounts")
    run.results.latency = await load(
        "latency", "--url", run.ledger.url, "--token", run.token, "--account", LONG_ACCOUNT,
        "--account", SHORT_ACCOUNT.replace("{:03d}", "%03d") + f":{SHORT_ACCOUNTS}",
        "--account", GRANTS_ACCOUNT.replace("{:02d}", "%02d") + f":{GRANTS_ACCOUNTS}",
        "--requests", str(run.options.latency_requests),
    )  # fmt: skip
    await wait_for_projector(run.pool)


async def warm_up(run: Run, *names: str) -> None:
    for name in names:
        await load(*run.args(name), *run.seconds(run.options.warmup))
    await wait_for_projector(run.pool)


COUNTED = (SPEND, WEBHOOK, CREDITS, INSERT)
"""The loads whose PostgreSQL transactions per request the report gives."""


async def measure(run: Run, name: str) -> Phase:
    """One measured round of a load on the server that answers it."""
    return await measured(
        run.server_of(name), run.pool, *run.args(name), *run.seconds(),
        count_transactions=name in COUNTED,
    )  # fmt: skip


async def spend_rounds(run: Run) -> None:
    """Bare INSERT on each stack, then spends, per round; lag and memory sampled."""
    progress("warming up: bare inserts and spends")
    await warm_up(run, INSERT, INSERT_GRANIAN, SPEND)
    sampler = Sampler(run.pool, run.ledger)
    rounds: dict[str, list[Phase]] = {INSERT: [], INSERT_GRANIAN: [], SPEND: []}
    for number in range(1, run.options.rounds + 1):
        for name in (INSERT, INSERT_GRANIAN):
            rounds[name].append(await measure(run, name))
        rounds[SPEND].append(await spend_round(run, sampler))
        progress(
            f"round {number}: "
            + ", ".join(f"{k} {v[-1].rate:,.0f}/s" for k, v in rounds.items())
            + f"; views caught up {run.results.drain_seconds[-1]:.2f} s after the spends stopped"
        )
    run.results.phases.update({name: combine(phases) for name, phases in rounds.items()})
    run.results.rss_peak = sampler.rss_peak
    run.results.view_rates = {view: sampler.advance_rates(view) for view in sampler.by_view}
    run.results.rss_after = run.ledger.rss_bytes()


async def spend_round(run: Run, sampler: Sampler) -> Phase:
    """One measured spend load; each spend's projection lag from the polls."""
    before = await head(run.pool)
    heads: list[int] = []

    async def drain() -> None:
        sampler.mark()
        heads.append(await head(run.pool))
        run.results.drain_seconds.append(await sampler.until_caught_up(heads[-1]))

    async with sampler.running():
        await asyncio.sleep(0.05)  # a first poll
        phase = await measured(
            run.ledger, run.pool, *run.args(SPEND), *run.seconds(),
            before_load=sampler.mark, after_load=drain,
        )  # fmt: skip
    stored = await spends_between(run.pool, before, heads[-1])
    run.results.lags += sampler.lags(stored)
    for view in ("balances", "statement"):
        run.results.view_lags.setdefault(view, []).extend(sampler.lags(stored, view))
    return phase


async def webhooks(run: Run) -> None:
    """Paid sessions (each recorded before its delivery), as long as all spend rounds."""
    progress("webhook deliveries")
    await load(*await run.webhook_args(run.options.warmup))
    await wait_for_projector(run.pool)
    total = run.options.seconds * run.options.rounds
    run.results.phases[WEBHOOK] = await measured(
        run.ledger, run.pool, *await run.webhook_args(total)
    )
    progress(f"webhooks {run.results.phases[WEBHOOK].rate:,.0f}/s")
    await wait_for_projector(run.pool)


async def credit_rounds(run: Run) -> None:
    """Bare JSON on each stack, then ``GET /v1/credits``, per round."""
    progress("GET /v1/credits and the bare JSON endpoints")
    await warm_up(run, HELLO, HELLO_GRANIAN, HELLO_PER_TURN, CREDITS)
    rounds: dict[str, list[Phase]] = {HELLO: [], HELLO_GRANIAN: [], HELLO_PER_TURN: [], CREDITS: []}
    for number in range(1, run.options.rounds + 1):
        for name in rounds:
            rounds[name].append(await measure(run, name))
        progress(
            f"round {number}: " + ", ".join(f"{k} {v[-1].rate:,.0f}/s" for k, v in rounds.items())
        )
    run.results.phases.update({name: combine(phases) for name, phases in rounds.items()})


PROFILED = (SPEND, WEBHOOK, CREDITS, INSERT, HELLO)


async def profiles(run: Run, folder: Path) -> None:
    """One more load of each kind with py-spy on the process that serves it."""
    seconds = run.options.profile_seconds
    for name in PROFILED:
        if name == WEBHOOK:
            args = await run.webhook_args(seconds + 1)
        else:
            args = [*run.args(name), *run.seconds(seconds + 1)]
        server = run.server_of(name)
        progress(f"profiling {name} ({server.name}, pid {server.pid}) for {seconds} s")
        async with profiled(folder, name.replace("/", "-"), server.pid, seconds) as raw:
            await load(*args)
        run.results.profiles[name] = raw
        await wait_for_projector(run.pool)

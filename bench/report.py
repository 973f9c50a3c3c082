"""The printed report: the table, the notes under it, the append detail, the CPU budget."""

from __future__ import annotations

import os

from bench import append_rate, machine
from bench.http_phase import LONG_ACCOUNT
from bench.options import Options
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
from bench.sampling import percentile
from bench.table import budget_table, main_table, unnamed_note

LOADS = {SPEND: "spend", INSERT: "bare insert (uvicorn)", INSERT_GRANIAN: "bare insert (granian)",
         WEBHOOK: "webhooks", CREDITS: "credits", HELLO: "bare JSON (uvicorn)",
         HELLO_GRANIAN: "bare JSON (granian)",
         HELLO_PER_TURN: "bare JSON (uvicorn, reads per turn)"}  # fmt: skip


def server_note(r: Results) -> str:
    server = r.server
    assert server is not None
    return (
        f"**{r.configuration.label}**: PostgreSQL {server.version} from {r.configuration.source}"
        f" ({r.configuration.transport}); synchronous_commit={server.synchronous_commit},"
        f" fsync={server.fsync}. Stacks, read from the processes: `ledger serve` on"
        f" {r.stacks[SERVICE]} with its protocol (api/http_writes.py); bare app on"
        f" {r.stacks['uvicorn']}, on {r.stacks['granian']} and on uvicorn with `ledger serve`'s"
        " protocol."
        f" Load average (1/5/15 min) at the start: {r.load_average}; whole run"
        f" {r.wall / 60:.1f} min."
    )


def cpu_note(r: Results) -> str:
    cpus = 100 * (os.cpu_count() or 1)
    spend = r.phase(SPEND)
    return (
        "Serving process CPU (one Python process = at most 100 %): "
        + ", ".join(f"{label} {r.phase(name).server_cpu:.0f} %" for name, label in LOADS.items())
        + "; waiting, ready, for a core (its threads' run queue, /proc schedstat): "
        + ", ".join(f"{label} {r.phase(name).server_wait:.0f} %" for name, label in LOADS.items())
        + f"; `ledger serve` with its projector during spends {spend.tree_cpu:.0f} %; whole"
        f" machine during spends {spend.machine_cpu:.0f} % of {cpus} %. PostgreSQL transactions"
        " per request: "
        + ", ".join(
            f"{LOADS[name]} {r.phase(name).transactions_per_request:.1f}"
            for name in (SPEND, INSERT, WEBHOOK, CREDITS)
        )
        + f". Spends against the bare INSERT on granian:"
        f" {r.phase(SPEND).rate / r.phase(INSERT_GRANIAN).rate:.2f}x; credits against the bare"
        " JSON on uvicorn with `ledger serve`'s protocol (reads answered per turn):"
        f" {r.phase(CREDITS).rate / r.phase(HELLO_PER_TURN).rate:.2f}x."
    )


def views_note(r: Results) -> str:
    advanced = ", ".join(
        f"{view} {' and '.join(f'{v:,.0f}' for v in rates)}" for view, rates in r.view_rates.items()
    )
    lags = ", ".join(
        f"{view} {1000 * percentile(v, 99):,.0f} ms" for view, v in r.view_lags.items()
    )
    caught_up = ", ".join(f"{s:.1f}" for s in r.drain_seconds)
    return (
        f"During the spend rounds the views advanced {advanced} events/s while spends were"
        f" stored at {r.phase(SPEND).rate:,.0f}/s; both caught up {caught_up} s after each round"
        f" ended. Lag p99 by view: {lags}."
    )


def data_note(r: Results, options: Options) -> str:
    generated, verify, rebuild = r.generated, r.replay["verify"], r.replay["rebuild"]
    assert generated is not None
    failures = {LOADS[name]: phase.failures for name, phase in r.phases.items()}
    return (
        f"Replay database: {generated.events:,} events generated in {generated.seconds:.1f} s"
        f" ({generated.rate:,.0f}/s; {generated.accounts:,} accounts, {generated.sessions:,} paid"
        f" sessions); views rebuilt in one pass: {', '.join(rebuild.detail['views'])}"
        f"; `ledger audit verify` took {verify.detail['wall_seconds']:.1f} s as a command."
        f" Service database: {LONG_ACCOUNT} ({options.history:,} events) appended in"
        f" {r.history_seconds:.1f} s (while the accounts were opened over HTTP); the"
        f" projector caught up with all of it {r.catchup_seconds:.1f} s after the last write."
        f" Non-2xx answers or socket errors: {failures}; webhook deliveries reused:"
        f" {r.phase(WEBHOOK).result['wraps']}."
    )


def load_note(options: Options) -> str:
    return (
        f"Load: wrk, 1 thread, {options.connections} connections, {options.rounds} rounds of"
        f" {options.seconds} s per load, interleaved with the baselines (bare INSERT on uvicorn,"
        f" on granian, then spends; bare JSON on uvicorn, on granian, on uvicorn with `ledger"
        " serve`'s protocol, then credits), after"
        f" {options.warmup} s of warm-up each; webhooks for {options.rounds * options.seconds} s"
        " after the spend rounds; latency percentiles are wrk's, the median over rounds."
        f" Appends: {options.append_seconds:g} s per design and client count in 2 interleaved"
        " rounds."
    )


def report(runs: list[Results], options: Options, skipped: list[str]) -> str:
    lines = ["## Benchmarks of the performance issue", "", *main_table(runs, options), ""]
    lines += [f"Machine: {machine.machine_line()}.", load_note(options), ""]
    for r in runs:
        lines += [server_note(r), cpu_note(r), views_note(r), data_note(r, options), *r.notes, ""]
    lines += [f"Skipped: {note}" for note in skipped]
    for r in runs:
        lines += [
            f"### Appends on {r.configuration.label}", "", *append_rate.append_table(r.appends), "",
        ]  # fmt: skip
    for r in runs:
        lines += [f"### CPU budget on {r.configuration.label}", "", *budget_table(r), ""]
        if r.profiles:
            lines += [unnamed_note(r), ""]
        elif options.profile is not None:
            lines += ["Stages: profiled on the first configuration only (`--profile-each`).", ""]
    if not any(r.profiles for r in runs):
        lines.append("(Stages: run with `--profile DIR` to split the totals with py-spy.)")
    return "\n".join(lines).rstrip() + "\n"

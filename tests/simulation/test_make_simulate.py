"""``make simulate`` (tests/simulation/run.py) as a terminal runs it: Ctrl-C stops every
worker and its PostgreSQL server in one line, and a worker that dies is reported rather
than waited for."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.cli import ROOT
from tests.support.processes import every_process, gone, spawned_workers


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder for the run's temporary files (its servers' data), short enough for
    PostgreSQL's socket path, and nothing else's."""
    with tempfile.TemporaryDirectory(prefix="sim") as folder:
        yield Path(folder)


@contextmanager
def simulation(scratch: Path, seeds: int, steps: int) -> Iterator[subprocess.Popen[str]]:
    """``python -m tests.simulation.run`` in a process group of its own, as a terminal runs
    ``make simulate``, one worker a seed, its temporary files in ``scratch``; ended
    (SIGKILL) if it is still running when the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.simulation.run"],
        env={
            **os.environ,
            "SIM_SEEDS": str(seeds),
            "SIM_WORKERS": str(seeds),
            "SIM_STEPS": str(steps),
            "SIM_LOG": str(scratch / "simulate.log"),
            "TMPDIR": str(scratch),
        },
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def servers(scratch: Path) -> dict[int, Path]:
    """The PostgreSQL servers keeping their data in ``scratch``: their pids and folders."""
    found = {}
    for pid, command in every_process().items():
        arguments = command.split()
        if arguments[0].endswith("/postgres") and "-D" in arguments:
            folder = Path(arguments[arguments.index("-D") + 1])
            if folder.is_relative_to(scratch):
                found[pid] = folder
    return found


def up(process: subprocess.Popen[str], scratch: Path, workers: int) -> dict[int, Path]:
    """The workers' servers, once each worker's serves."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(running := servers(scratch)) == workers:
            return running
        time.sleep(0.005)
    raise AssertionError("the workers' PostgreSQL servers did not start")


def test_ctrl_c_stops_every_worker_and_its_server_in_one_line(scratch: Path) -> None:
    with simulation(scratch, seeds=2, steps=100_000) as process:
        running = up(process, scratch, workers=2)
        workers = spawned_workers(process.pid)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's process group
        output, _ = process.communicate(timeout=120)

    assert process.returncode == 130, output
    assert output.strip().splitlines() == [
        "stopping the workers and their PostgreSQL servers…",
        "interrupted: 0 of 2 seeds played (0 violations); every worker and its PostgreSQL stopped",
    ], output
    assert gone([*running, *workers]), "a worker or a server outlived the run"
    assert not list(scratch.glob("ledger-sim-*")), "the servers' data was left"


def test_a_worker_that_dies_is_reported_and_the_others_play_on(scratch: Path) -> None:
    with simulation(scratch, seeds=2, steps=60) as process:
        running = up(process, scratch, workers=2)
        os.kill(min(spawned_workers(process.pid)), signal.SIGKILL)
        output, _ = process.communicate(timeout=180)

    assert process.returncode == 1, output
    assert "Traceback" not in output, output
    lost = re.search(r"\] seed (\d+): not played, the worker ended", output)
    assert lost, output
    played = {"1", "2"} - {lost.group(1)}
    assert re.search(rf"\] seed {played.pop()}: \d+ steps in ", output), output
    assert (
        f"a worker ended (exit code -9) before it played seed {lost.group(1)}: its output "
        "above says why"
    ) in output
    assert output.strip().splitlines()[-1].endswith("1 violations"), output
    assert gone(list(running)), "the dead worker's PostgreSQL server was left running"
    assert not list(scratch.glob("ledger-sim-*")), "the servers' data was left"

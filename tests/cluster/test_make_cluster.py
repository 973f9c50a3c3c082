"""`make cluster` itself: `ledger dev cluster` starts every part, answers through nginx
with reads from the standby, and one Ctrl-C stops all of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from cluster import nginx
from cluster.postgres import PostgresError, find_binaries
from cluster.run import Ports, port_is_free

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_ports(replicas: int) -> Ports:
    """Ports free now, all below Linux's first port for outgoing connections (32768): a CI
    run's primary, picked at 32896, was taken by another test's connection between this
    check and its bind ("Address already in use")."""
    for _ in range(50):
        # nginx, its replicas and their metrics in 20000-29101; PostgreSQL in 29200-32700.
        ports = Ports(20000 + secrets.randbelow(9000), replicas, 29200 + secrets.randbelow(3500))
        if all(port_is_free(port) for port in ports.all()):
            return ports
    raise AssertionError("no free ports for the cluster")


def _cluster_processes(folder: Path) -> list[tuple[psutil.Process, str]]:
    """Processes still running that belong to the cluster in ``folder``, with their lines."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or ())
        try:
            data_dir = process.environ().get("LEDGER_DATA_DIR", "")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            data_dir = ""
        if str(folder) in line or data_dir.startswith(str(folder)):
            found.append((process, line))
    return found


def leftovers(folder: Path) -> list[str]:
    """Processes still running that belong to the cluster in ``folder``."""
    return [f"{process.pid}: {line[:150]}" for process, line in _cluster_processes(folder)]


_STARTED_IN: list[Path] = []
"""The folders of the clusters the running test started (``ledger_dev_cluster``)."""


@pytest.fixture(autouse=True)
def _nothing_left_running() -> Iterator[None]:
    """Kills what is left of the test's clusters once it has ended (and looked for them):
    a test that failed to stop one killed the driver's group only, and honcho's processes,
    nginx and the PostgreSQL servers, in sessions of their own, ran on past the suite (CI
    at 01769b2)."""
    yield
    while _STARTED_IN:
        for process, _ in _cluster_processes(_STARTED_IN.pop()):
            with contextlib.suppress(psutil.Error):
                process.kill()


def ledger_dev_cluster(ports: Ports, folder: Path, log: Path) -> subprocess.Popen[bytes]:
    """``ledger dev cluster`` on ``ports`` with its data in ``folder``, its output in ``log``."""
    _STARTED_IN.append(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE"))}
    with log.open("wb") as output:
        return subprocess.Popen(  # noqa: S603
            [
                str(Path(sys.executable).parent / "ledger"),
                "dev",
                "cluster",
                "--replicas",
                str(ports.replicas),
                "--port",
                str(ports.base),
                "--pg-port",
                str(ports.postgres),
                "--data",
                str(folder),
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own terminal group, as at a shell's prompt
        )


def skip_without_postgres_programs() -> None:
    try:
        find_binaries()
    except PostgresError as error:
        pytest.skip(f"no PostgreSQL programs for a primary and a standby: {error}")


async def test_ledger_dev_cluster_serves_through_nginx_and_ctrl_c_stops_everything() -> None:
    if nginx.find_nginx() is None:
        pytest.skip("no nginx: `make nginx` installs Debian's package")
    skip_without_postgres_programs()
    ports = free_ports(2)
    with tempfile.TemporaryDirectory(prefix="ledger-make-cluster-") as name:
        folder = Path(name) / "cluster"
        log = Path(name) / "cluster.log"
        driver = ledger_dev_cluster(ports, folder, log)
        try:
            base = f"http://127.0.0.1:{ports.base}"
            token_file = folder / "data" / "demo-token"
            deadline = time.monotonic() + 120
            source = None
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                while time.monotonic() < deadline and source != "standby":
                    assert driver.poll() is None, log.read_text()
                    await asyncio.sleep(0.2)
                    if not token_file.exists():
                        continue
                    try:
                        answer = await client.get(
                            "/v1/credits",
                            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
                        )
                    except httpx.TransportError:
                        continue
                    if answer.status_code == 200:
                        source = answer.headers.get("ledger-read-from")
                assert source == "standby", log.read_text()[-3000:]
                # The stand-in runs for the replicas: a purchase gets a checkout page from it.
                bought = await client.post(
                    "/v1/credits/purchase",
                    json={"credits": 100},
                    headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
                )
                assert bought.status_code == 200, bought.text
                assert f":{ports.standin}/" in bought.json()["checkout_url"]
                assert bought.headers["ledger-position"].isdigit()
            printed = log.read_text()
            for where in (base, *(f"127.0.0.1:{port}" for port in ports.apis)):
                assert where in printed
            assert "postgres standby" in printed

            os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C
            code = await asyncio.to_thread(driver.wait, 60)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait(10)
        print(f"\nledger dev cluster stopped by Ctrl-C with exit code {code}")
        await asyncio.sleep(0.5)
        assert leftovers(folder) == []
        assert "stopping the standby and the primary" in log.read_text()


def wait_for_line(
    driver: subprocess.Popen[bytes], log: Path, line: str, *, pause: float = 0.05
) -> None:
    deadline = time.monotonic() + 60
    while line not in log.read_text():
        assert driver.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(pause)


@pytest.mark.parametrize(
    ("signum", "ended"),
    [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_a_signal_while_it_starts_stops_the_servers_it_started(signum: int, ended: int) -> None:
    """SIGTERM ended it on the spot and a Ctrl-C went past its clean-up: the primary, in a
    session of its own, ran on."""
    skip_without_postgres_programs()
    ports = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="ledger-make-cluster-") as name:
        folder = Path(name) / "cluster"
        log = Path(name) / "cluster.log"
        driver = ledger_dev_cluster(ports, folder, log)
        try:
            wait_for_line(driver, log, "copying the primary into a fresh standby")
            if signum == signal.SIGINT:
                os.killpg(driver.pid, signum)  # a terminal's Ctrl-C: the whole group
            else:
                driver.send_signal(signum)  # a service manager's stop: the process
            code = driver.wait(60)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait(10)
        assert leftovers(folder) == [], log.read_text()
        assert code == ended, log.read_text()
        assert "stopping the standby and the primary" in log.read_text()


def test_an_error_after_the_servers_started_stops_them() -> None:
    """An error past the migrate step (here its Procfile cannot be written) left them
    running."""
    skip_without_postgres_programs()
    ports = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="ledger-make-cluster-") as name:
        folder = Path(name) / "cluster"
        (folder / "Procfile").mkdir(parents=True)
        log = Path(name) / "cluster.log"
        driver = ledger_dev_cluster(ports, folder, log)
        try:
            code = driver.wait(120)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait(10)
        assert leftovers(folder) == [], log.read_text()
        assert code == 1
        assert log.read_text().endswith(f"Error: Is a directory: {folder / 'Procfile'}\n")


def test_a_sigint_sent_to_it_alone_stops_everything() -> None:
    """A SIGINT to its process only (``kill -INT``, a tool's stop button), not to the terminal's
    group: honcho never heard of it, and everything ran on."""
    skip_without_postgres_programs()
    ports = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="ledger-make-cluster-") as name:
        folder = Path(name) / "cluster"
        log = Path(name) / "cluster.log"
        driver = ledger_dev_cluster(ports, folder, log)
        try:
            wait_for_line(driver, log, "ledger API ready on")
            driver.send_signal(signal.SIGINT)
            try:
                code = driver.wait(30)
            except subprocess.TimeoutExpired:
                driver.terminate()  # which stops it all (a SIGKILL would leave the rest)
                driver.wait(60)
                raise AssertionError(f"a SIGINT did not stop it:\n{log.read_text()}") from None
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait(10)
        assert leftovers(folder) == [], log.read_text()
        assert code == 128 + signal.SIGINT  # honcho's, on SIGINT
        assert "stopping the standby and the primary" in log.read_text()


def test_a_second_sigterm_while_it_stops_the_servers_does_not_cut_that_short() -> None:
    """A service manager repeating its SIGTERM (or a second Ctrl-C) ended the stopping at the
    standby: the primary ran on."""
    skip_without_postgres_programs()
    ports = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="ledger-make-cluster-") as name:
        folder = Path(name) / "cluster"
        log = Path(name) / "cluster.log"
        driver = ledger_dev_cluster(ports, folder, log)
        try:
            wait_for_line(driver, log, "copying the primary into a fresh standby")
            driver.send_signal(signal.SIGTERM)
            wait_for_line(driver, log, "stopping the standby and the primary", pause=0.001)
            driver.send_signal(signal.SIGTERM)
            code = driver.wait(60)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait(10)
        assert leftovers(folder) == [], log.read_text()
        assert code == 128 + signal.SIGTERM

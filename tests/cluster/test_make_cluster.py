"""`make cluster` itself: `ledger dev cluster` starts every part, answers through nginx
with reads from the standby, and one Ctrl-C stops all of it."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
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
    for _ in range(50):
        ports = Ports(20000 + secrets.randbelow(9000), replicas, 30000 + secrets.randbelow(9000))
        if all(port_is_free(port) for port in ports.all()):
            return ports
    raise AssertionError("no free ports for the cluster")


def leftovers(folder: Path) -> list[str]:
    """Processes still running that belong to the cluster in ``folder``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or ())
        try:
            data_dir = process.environ().get("LEDGER_DATA_DIR", "")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            data_dir = ""
        if str(folder) in line or data_dir.startswith(str(folder)):
            found.append(f"{process.pid}: {line[:150]}")
    return found


async def test_ledger_dev_cluster_serves_through_nginx_and_ctrl_c_stops_everything() -> None:
    if nginx.find_nginx() is None:
        pytest.skip("no nginx: `make nginx` installs Debian's package")
    try:
        find_binaries()
    except PostgresError as error:
        pytest.skip(f"no PostgreSQL programs for a primary and a standby: {error}")
    ports = free_ports(2)
    with tempfile.TemporaryDirectory(prefix="ledger-make-cluster-") as name:
        folder = Path(name) / "cluster"
        log = Path(name) / "cluster.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE"))}
        with log.open("wb") as output:
            driver = subprocess.Popen(  # noqa: ASYNC220, S603
                [
                    str(Path(sys.executable).parent / "ledger"),
                    "dev",
                    "cluster",
                    "--replicas",
                    "2",
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

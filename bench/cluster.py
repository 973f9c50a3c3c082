"""Throughput of the topology on this machine, next to a single process (docs/scaling.md).

    python -m bench.cluster [--seconds 8] [--connections 64]

Starts, on loopback ports, a PostgreSQL primary and its streaming standby
(cluster/postgres.py) and one projector, then measures with wrk (bench/load.py):

* a single API process (``ledger serve --no-projector``, views read from the
  primary), spends and balance reads sent to it directly: the baseline;
* 1, 2 and 3 replicas behind nginx (deploy/nginx.conf, cluster/nginx.py) reading
  the views from the standby: spends, and balance reads at 1 and 3 replicas.

Prints one line per measurement and a JSON summary (``BENCH_RESULT``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from api.access.tokens import Scope, TokenService
from api.database import create_pool
from bench.load import RESULT_MARK, get_scenario, post_scenario
from bench.service import free_port, open_accounts
from cluster import nginx
from cluster.postgres import PostgresServer, create_database, find_binaries
from cluster.run import ROOT, resolve
from cluster.topology import Plan, ledger_processes, setup_process

ACCOUNTS = 1000
READERS = 50


class Running:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


async def healthy(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {seconds} s")


async def conflicts(chosen: Plan) -> int:
    """Spends decided again after another writer got to their account first, in all replicas."""
    total = 0
    async with httpx.AsyncClient(timeout=5) as client:
        for (host, _), port in zip(chosen.api_addresses, chosen.metrics_ports, strict=True):
            text = (await client.get(f"http://{host}:{port}/metrics")).text
            for line in text.splitlines():
                if line.startswith('ledger_concurrency_conflicts_total{outcome="retried"}'):
                    total += int(float(line.split()[-1]))
    return total


def measure(kind: str, url: str, tokens: list[str], args: argparse.Namespace) -> dict[str, Any]:
    common = {"url": url, "connections": args.connections, "seconds": args.seconds}
    if kind == "spend":
        return post_scenario(
            argparse.Namespace(
                **common,
                token=tokens,
                path="/v1/accounts/acct_bench_%04d/spend",
                accounts=ACCOUNTS,
            )
        )
    return get_scenario(argparse.Namespace(**common, token=tokens, path="/v1/credits"))


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if nginx.find_nginx() is None:
        raise SystemExit("no nginx: `make nginx` installs Debian's package")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-cluster-") as name:
        folder = Path(name)
        os.chmod(name, 0o755)  # noqa: S103  (the servers' user reaches its data folders)
        binaries = find_binaries()
        primary = PostgresServer(
            "primary", binaries, folder / "pg-primary", "127.0.0.1", free_port()
        )
        standby = PostgresServer(
            "standby", binaries, folder / "pg-standby", "127.0.0.1", free_port()
        )
        running: list[Running] = []
        try:
            primary.initdb()
            primary.start()
            create_database(primary)
            standby.make_standby_of(primary)
            standby.start()

            def plan(addresses: list[tuple[str, int]], read: bool, public: str) -> Plan:
                return Plan(
                    api_addresses=addresses,
                    admin_url=primary.url(),
                    database_url=primary.url(user="ledger_service"),
                    read_url=standby.url(user="ledger_service") if read else None,
                    public_url=public,
                    data_dir=folder / "data",
                    webhook_secret="whsec_bench",  # noqa: S106  (a test value)
                    page_key="k" * 64,
                    metrics_ports=[free_port() for _ in addresses],
                )

            environ = {
                "STRIPE_SECRET_KEY": "sk_test_bench",
                "STRIPE_API_BASE": "http://127.0.0.1:9",
            }

            def start(processes: list[str], chosen: Plan) -> list[Running]:
                started = []
                for process in ledger_processes(chosen, environ):
                    if process.name in processes:
                        started.append(
                            Running(
                                resolve(process.argv),
                                {**os.environ, **process.env},
                                folder / f"{process.name}.log",
                            )
                        )
                running.extend(started)
                return started

            # The baseline: one process, views from the primary, no proxy.
            port = free_port()
            single_plan = plan([("127.0.0.1", port)], False, f"http://127.0.0.1:{port}")
            migrate = setup_process(single_plan)
            subprocess.run(  # noqa: ASYNC221
                resolve(migrate.argv), env={**os.environ, **migrate.env}, cwd=ROOT, check=True
            )
            single = start(["api1"], single_plan)
            await healthy(single_plan.public_url)
            start(["projector"], single_plan)
            pool = await create_pool(primary.url(), min_size=1, max_size=4)
            try:
                writer = (await TokenService(pool).issue(Scope.LEDGER_WRITE, name="bench")).secret
                account_ids = [f"acct_bench_{n:04d}" for n in range(ACCOUNTS)]
                await open_accounts(single_plan.public_url, writer, account_ids, allowance=10**9)
                readers = [
                    (await TokenService(pool).issue(Scope.CREDITS, account_id=a)).secret
                    for a in account_ids[:READERS]
                ]
            finally:
                await pool.close()

            def record(
                setup: str, kind: str, result: dict[str, Any], retried: int | None = None
            ) -> None:
                line = {
                    "setup": setup,
                    "kind": kind,
                    "rate": round(result["rate"]),
                    "non_2xx": result["non_2xx"],
                    "socket_errors": result["socket_errors"],
                    "p99_ms": round(result["latency_us"]["p99"] / 1000, 1),
                    "conflicts_retried": retried,
                }
                results.append(line)
                print(
                    f"{setup:<36} {kind:<6} {line['rate']:>6}/s  p99 {line['p99_ms']:>6} ms  "
                    f"non-2xx {line['non_2xx']}"
                    + (f"  conflicts retried {retried}" if retried is not None else ""),
                    flush=True,
                )

            setup = "single process (no proxy, primary)"
            record(setup, "spend", measure("spend", single_plan.public_url, [writer], args))
            record(setup, "read", measure("read", single_plan.public_url, readers, args))
            for process in single:
                process.stop()

            for replicas, by_account in ((1, False), (2, False), (2, True), (3, False), (3, True)):
                proxy_port = free_port()
                public = f"http://127.0.0.1:{proxy_port}"
                chosen = plan([("127.0.0.1", free_port()) for _ in range(replicas)], True, public)
                apis = start([f"api{n}" for n in range(1, replicas + 1)], chosen)
                command = nginx.prepare(
                    [f"{h}:{p}" for h, p in chosen.api_addresses],
                    f"127.0.0.1:{proxy_port}",
                    folder / f"nginx-{replicas}-{by_account}",
                    by_account=by_account,
                )
                proxy = Running(command, dict(os.environ), folder / "nginx.log")
                running.append(proxy)
                await asyncio.gather(*(healthy(f"http://{h}:{p}") for h, p in chosen.api_addresses))
                await healthy(public)
                setup = f"nginx + {replicas} replica{'s' if replicas > 1 else ''}" + (
                    ", by account" if by_account else ""
                )
                before = await conflicts(chosen)
                result = measure("spend", public, [writer], args)
                record(setup, "spend", result, await conflicts(chosen) - before)
                if replicas in (1, 3) and not by_account:
                    record(setup, "read", measure("read", public, readers, args))
                proxy.stop()
                for process in apis:
                    process.stop()
        finally:
            for process in running:
                process.stop()
            standby.stop()
            primary.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print(RESULT_MARK + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()

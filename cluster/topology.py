"""The processes of the deployment, named as ``docker-compose.yml`` names its services.

``make cluster`` runs these (through honcho), the cluster tests start the same
ones one by one (so that they can kill one), and a test checks that the
compose file runs the same commands with the same variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# What every ledger process reads, as the compose file's x-ledger-environment lists it.
COMMON_VARIABLES = (
    "DATABASE_URL",
    "LEDGER_ENV",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "LEDGER_PAGE_KEY",
    "METRICS_PORT",
    "CREDIT_UNIT_AMOUNT",
    "CREDIT_CURRENCY",
    "DEFAULT_MONTHLY_ALLOWANCE",
    "LEDGER_DATA_DIR",
)
# Taken from the caller's environment when set, as compose's ${NAME:-default} does.
PASSED_THROUGH = {
    "LEDGER_ENV": "development",
    "STRIPE_SECRET_KEY": "",
    "STRIPE_WEBHOOK_SECRET": "",
    "STRIPE_API_BASE": "",
    "LEDGER_PAGE_KEY": "",
    "CREDIT_UNIT_AMOUNT": "1",
    "CREDIT_CURRENCY": "usd",
    "DEFAULT_MONTHLY_ALLOWANCE": "1000",
    "LEDGER_CORS_ORIGINS": "",
}


@dataclass(frozen=True)
class Process:
    """One process of the topology."""

    name: str
    """Its own name (``api2``)."""
    service: str
    """The compose service it is one of (``api``)."""
    argv: list[str]
    """As compose runs it: ``ledger ...`` for the ledger's own processes."""
    env: dict[str, str] = field(default_factory=dict)
    """What it is given beyond the inherited environment."""
    listens: str = ""
    """Where it answers, for the start-up table."""
    host: str | None = None
    """The test host (namespace) it runs on; None: this machine."""


@dataclass(frozen=True)
class Plan:
    """Where everything goes."""

    api_addresses: list[tuple[str, int]]
    """(host, port) of each API replica."""
    admin_url: str
    """The primary, as a role that may set the database up (the migrate step only)."""
    database_url: str
    """The primary, as ledger_service: what every process connects with."""
    read_url: str | None
    """The standby, as ledger_service; None: no standby."""
    public_url: str
    """nginx's address: the one base URL clients and Stripe use."""
    data_dir: Path
    webhook_secret: str
    page_key: str
    """Signs the checkout success links: the same in every replica."""
    metrics_ports: list[int] = field(default_factory=list)
    """Each replica's METRICS_PORT (default: 9100, each replica on a host of its own)."""
    standin_port: int | None = None
    """The Stripe stand-in's port when it runs (no STRIPE_SECRET_KEY); None: real Stripe."""
    relay_url: str | None = None
    """``ledger relay`` publishes to this NATS server; None: no relay."""
    relay_database_url: str | None = None
    """The primary, as ledger_relay: what the relay connects with (None: ``database_url``)."""
    projector_database_url: str | None = None
    """The primary, as ledger_projector: what the projector connects with (None:
    ``database_url``)."""
    api_hosts: list[str | None] = field(default_factory=list)
    """The test host of each replica (None or empty: this machine)."""
    workers_host: str | None = None
    """The test host of the projector and the relay."""


DATABASE_ONLY_VARIABLES = ("DATABASE_URL", "LEDGER_ENV", "LEDGER_DATA_DIR")
"""What of the common environment the projector and the relay get (compose's projector and
relay services list the same): they use the database alone, so none of the service's
secrets (Stripe's keys, the page key) are on their host."""


def common_environment(plan: Plan, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables every ledger process gets (compose: x-ledger-environment)."""
    environ = os.environ if environ is None else environ
    env = {name: environ.get(name, default) for name, default in PASSED_THROUGH.items()}
    env.pop("LEDGER_CORS_ORIGINS")
    env["DATABASE_URL"] = plan.database_url
    env["LEDGER_DATA_DIR"] = str(plan.data_dir)
    env["LEDGER_PAGE_KEY"] = env["LEDGER_PAGE_KEY"] or plan.page_key
    env["METRICS_PORT"] = "9100"  # read by `ledger serve` only
    if plan.standin_port is not None:
        env["STRIPE_API_BASE"] = f"http://127.0.0.1:{plan.standin_port}"
    if not env["STRIPE_WEBHOOK_SECRET"]:
        env["STRIPE_WEBHOOK_SECRET"] = plan.webhook_secret
    assert set(env) == set(COMMON_VARIABLES)
    return env


def setup_process(plan: Plan) -> Process:
    """The one-shot set-up of the database that runs before the rest (compose: migrate)."""
    return Process(
        "migrate",
        "migrate",
        ["ledger", "db", "setup"],
        # Trust authentication here: the login roles need no password.
        {
            "DATABASE_ADMIN_URL": plan.admin_url,
            "LEDGER_SERVICE_PASSWORD": "",
            "LEDGER_PROJECTOR_DATABASE_PASSWORD": "",
            "LEDGER_RELAY_DATABASE_PASSWORD": "",
        },
        "(once, before the rest)",
    )


def ledger_processes(plan: Plan, environ: Mapping[str, str] | None = None) -> list[Process]:
    """The ledger's own processes: the API replicas, the projector, the stand-in, the relay."""
    environ = os.environ if environ is None else environ
    common = common_environment(plan, environ)
    processes = []
    hosts = plan.api_hosts or [None] * len(plan.api_addresses)
    metrics = plan.metrics_ports or [9100] * len(plan.api_addresses)
    for number, ((host, port), test_host, metrics_port) in enumerate(
        zip(plan.api_addresses, hosts, metrics, strict=True), start=1
    ):
        env = {
            **common,
            "METRICS_PORT": str(metrics_port),
            "HOST": host,
            "PORT": str(port),
            "LEDGER_PUBLIC_URL": plan.public_url,
            "LEDGER_CORS_ORIGINS": environ.get("LEDGER_CORS_ORIGINS", ""),
        }
        if plan.read_url:
            env["DATABASE_READ_URL"] = plan.read_url
        processes.append(
            Process(
                f"api{number}",
                "api",
                ["ledger", "serve", "--no-projector"],
                env,
                f"http://{host}:{port}  (/metrics on :{metrics_port})",
                test_host,
            )
        )
    # The projector also runs the webhook dispatcher (`ledger project --dispatch`, the default).
    processes.append(
        Process(
            "projector",
            "projector",
            ["ledger", "project"],
            {
                **{name: common[name] for name in DATABASE_ONLY_VARIABLES},
                "DATABASE_URL": plan.projector_database_url or plan.database_url,
            },
            "(no port: views and webhook deliveries)",
            plan.workers_host,
        )
    )
    if plan.standin_port is not None:
        processes.append(
            Process(
                "stripe-standin",
                "stripe-standin",
                [
                    "ledger",
                    "dev",
                    "standin",
                    "--port",
                    str(plan.standin_port),
                    "--webhook-url",
                    f"{plan.public_url}/v1/stripe/webhook",
                ],
                dict(common),
                f"http://127.0.0.1:{plan.standin_port}",
            )
        )
    if plan.relay_url is not None:
        processes.append(
            Process(
                "relay",
                "relay",
                ["ledger", "relay"],
                # The database alone, as compose's relay: none of the service's secrets. No CA
                # of its own: a tls:// broker's certificate is checked against the system's.
                {
                    **{name: common[name] for name in DATABASE_ONLY_VARIABLES},
                    "DATABASE_URL": plan.relay_database_url or plan.database_url,
                    "LEDGER_RELAY_URL": plan.relay_url,
                    "LEDGER_RELAY_TLS_CA": "",
                },
                f"(publishes to {plan.relay_url})",
                plan.workers_host,
            )
        )
    return processes

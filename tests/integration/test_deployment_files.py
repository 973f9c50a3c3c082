"""docker-compose.yml and the Dockerfile stay runnable without a Docker engine to try them on.

They are parsed and checked against the code: every command they run is a real
``ledger`` command with real options, every variable they set is one the service
reads, and the services the deployment needs are there.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from api.cli import main as ledger_cli
from api.settings import Settings, SettingsError
from api.startup import KEEP_ALIVE_SECONDS, STOP_GRACE_SECONDS
from cluster import nginx
from cluster.run import base_environment, headline, procfile_line
from cluster.topology import Plan, Process, ledger_processes, setup_process
from relay.runner import production_problems as relay_production_problems

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_REPLICAS = next(
    p.default
    for p in ledger_cli.commands["dev"].commands["cluster"].params  # type: ignore[attr-defined]
    if p.name == "replicas"
)


class RecordingEnvironment(Mapping[str, str]):
    """An empty environment that notes every name asked of it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        self.asked.add(name)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def variables_the_service_reads() -> set[str]:
    environment = RecordingEnvironment()
    Settings.from_env(environment)
    return environment.asked


def ledger_command(argv: list[str]) -> click.Command:
    """The click command ``argv`` runs (checked by ``ledger_command_problem`` first)."""
    command: click.Command = ledger_cli
    for word in argv[1:]:
        if not isinstance(command, click.Group) or word.startswith("-"):
            break
        command = command.commands[word]
    return command


def variables_the_command_reads(argv: list[str]) -> set[str]:
    """The settings' variables and the command's own options' (``envvar=``)."""
    names = set(variables_the_service_reads())
    for param in ledger_command(argv).params:
        if isinstance(param, click.Option) and param.envvar:
            names.update([param.envvar] if isinstance(param.envvar, str) else param.envvar)
    return names


_REFERENCE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def resolved(value: str, shell: Mapping[str, str]) -> str:
    """``value`` with compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` filled in
    from ``shell`` as compose does (a missing ``:?`` one is an error)."""

    def fill(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if shell.get(name):
            return shell[name]
        if kind == "?":
            raise ValueError(f"compose stops: {rest}")
        return rest if kind == "-" else ""

    return _REFERENCE.sub(fill, value)


PASSWORDS_IN_URLS = {
    "POSTGRES_PASSWORD",
    "LEDGER_SERVICE_PASSWORD",
    "LEDGER_RELAY_DATABASE_PASSWORD",
    "LEDGER_PROJECTOR_DATABASE_PASSWORD",
    "NATS_PASSWORD",
}
"""Shell variables compose puts into the database and broker URLs (no service reads them by
name)."""


SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "LEDGER_SERVICE_PASSWORD": "service-secret",
    "STRIPE_SECRET_KEY": "sk_live_compose",
    "STRIPE_WEBHOOK_SECRET": "whsec_compose",
    "LEDGER_PAGE_KEY": "k" * 64,
    "NATS_PASSWORD": "nats-secret",
    "LEDGER_RELAY_DATABASE_PASSWORD": "relay-secret",
    "LEDGER_PROJECTOR_DATABASE_PASSWORD": "projector-secret",
}
"""What an operator sets in the shell (docker-compose.yml's header lists them)."""


def environment_of(service: dict[str, Any], shell: Mapping[str, str]) -> dict[str, str]:
    return {name: resolved(str(value), shell) for name, value in service["environment"].items()}


def ledger_command_problem(argv: list[str]) -> str | None:
    """Why ``argv`` is not a command of the ``ledger`` CLI (None: it is one)."""
    if not argv or argv[0] != "ledger":
        return f"{argv} does not run ledger"
    command: click.Command = ledger_cli
    words = argv[1:]
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        name, words = words[0], words[1:]
        found = command.commands.get(name)
        if found is None:
            return f"{argv}: ledger has no command {name!r}"
        command = found
    if isinstance(command, click.Group):
        return f"{argv} names a group, not a command"
    options = {
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
    }
    for word in words:
        if word.startswith("-") and word.split("=", 1)[0] not in options:
            return f"{argv}: {' '.join(argv[:2])} has no option {word}"
    return None


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def ledger_services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: s for name, s in document["services"].items() if "build" in s}


def test_the_check_itself_tells_real_commands_from_made_up_ones() -> None:
    assert ledger_command_problem(["ledger", "serve", "--no-projector"]) is None
    assert ledger_command_problem(["ledger", "audit", "verify", "--json"]) is None
    assert ledger_command_problem(["ledger", "serve", "--threads"]) is not None
    assert ledger_command_problem(["ledger", "migrate"]) is not None
    assert ledger_command_problem(["ledger", "audit"]) is not None


def test_compose_runs_postgres_api_replicas_behind_one_entry_point_and_one_projector() -> None:
    services = compose()["services"]

    assert services["postgres"]["image"].startswith("postgres:")
    api = services["api"]
    assert api["deploy"]["replicas"] >= 2
    # Replicas cannot share a host port: only the proxy publishes one, and it reaches them
    # by the service name (Docker's DNS answers with every replica).
    assert "ports" not in api
    proxy = services["proxy"]
    assert proxy["ports"] == ["8000:8000"]
    config = ROOT / proxy["volumes"][0].split(":")[0]
    assert "proxy_pass $api" in config.read_text()
    assert "set $api http://api:8000;" in config.read_text()
    projector = services["projector"]
    assert projector["command"][:2] == ["ledger", "project"]
    assert projector.get("deploy", {}).get("replicas", 1) == 1
    # The API replicas leave the projection to the projector service.
    assert "--no-projector" in api["command"]
    for name in ("api", "projector", "postgres-standby"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "DATABASE_READ_URL" in api["environment"]


def test_compose_waits_for_a_replica_to_cut_off_its_stragglers_and_shut_down() -> None:
    """A SIGTERM gives requests in flight STOP_GRACE_SECONDS, then cuts off the rest and
    shuts the app down: the supervisor must wait longer than that before its SIGKILL."""
    grace = compose()["services"]["api"]["stop_grace_period"]
    assert grace.endswith("s"), grace
    assert int(grace[:-1]) >= STOP_GRACE_SECONDS + 5


def test_every_command_compose_runs_is_a_ledger_command() -> None:
    problems = [
        f"{name}: {problem}"
        for name, service in ledger_services(compose()).items()
        if (problem := ledger_command_problem(service["command"]))
    ]

    assert problems == []


def test_compose_sets_only_variables_the_service_reads() -> None:
    document = compose()

    problems = []
    for name, service in ledger_services(document).items():
        known = variables_the_command_reads(service["command"])
        environment = service["environment"]
        assert {"DATABASE_URL", "DATABASE_ADMIN_URL"} & set(environment), name
        problems.extend(f"{name}: {v}" for v in environment if v not in known)
        for value in map(str, environment.values()):
            problems.extend(
                f"{name}: takes ${{{v}}}"
                for v in re.findall(r"\$\{(\w+)", value)
                if v not in known | PASSWORDS_IN_URLS
            )

    assert problems == []
    assert {
        "DATABASE_URL",
        "PORT",
        "STRIPE_SECRET_KEY",
        "LEDGER_ENV",
    } <= variables_the_service_reads()


def test_the_dockerfile_installs_the_project_and_runs_a_ledger_command() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    instructions = [
        line.split(None, 1) for line in lines if line.strip() and not line.startswith("#")
    ]
    commands = [json.loads(rest) for word, rest in instructions if word in ("CMD", "ENTRYPOINT")]

    assert commands, "the Dockerfile runs nothing"
    for command in commands:
        assert ledger_command_problem(command) is None
    copied = {rest.split()[0] for word, rest in instructions if word == "COPY"}
    for package in ("ledger", "api", "projections", "audit", "stripe_standin", "relay", "cluster"):
        assert package in copied, f"the image lacks {package}/"
    assert any(word == "RUN" and "-c constraints.txt" in rest for word, rest in instructions)
    env = " ".join(rest for word, rest in instructions if word == "ENV")
    assert set(re.findall(r"(\w+)=", env)) <= variables_the_service_reads()


def dockerfile_environment() -> dict[str, str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    env = " ".join(line.split(None, 1)[1] for line in lines if line.startswith("ENV "))
    return dict(re.findall(r"(\w+)=(\S+)", env))


def test_the_image_and_compose_default_to_production() -> None:
    document = compose()

    assert dockerfile_environment()["LEDGER_ENV"] == "production"
    for name in ("api", "projector"):
        # Nothing set in the shell but the secrets: production.
        assert environment_of(document["services"][name], SECRETS)["LEDGER_ENV"] == "production"


def test_compose_with_the_secrets_set_is_a_production_the_service_accepts() -> None:
    services = compose()["services"]

    settings = Settings.from_env(environment_of(services["api"], SECRETS))
    assert settings.production
    assert settings.stripe_api_base is None
    assert settings.metrics_port is not None or settings.metrics_token
    # The projector (`ledger project`) asks for the database alone.
    projector = Settings.from_env(environment_of(services["projector"], SECRETS), service=False)
    assert projector.production
    # And without Stripe's keys the service refuses to start (no stand-in in production).
    bare = {k: v for k, v in SECRETS.items() if not k.startswith("STRIPE_")}
    with pytest.raises(SettingsError, match="needs STRIPE_SECRET_KEY"):
        Settings.from_env(environment_of(services["api"], bare))


def test_compose_runs_the_relay_to_a_nats_that_takes_its_credentials() -> None:
    """In production the relay refuses an open broker and credentials in plain text to
    another host: compose's NATS asks for the user and password the relay's URL holds, over
    TLS with the certificate the relay's CA checks, and without NATS_PASSWORD the relay says
    so."""
    services = compose()["services"]
    relay = environment_of(services["relay"], SECRETS)
    url = urlsplit(relay["LEDGER_RELAY_URL"])
    nats = services["nats"]["command"]

    assert relay_production_problems(url.geturl()) == []
    assert url.scheme == "tls"
    assert "--tls" in nats
    # The relay's CA file is the one beside the certificate and key NATS serves.
    [(folder, mounted)] = [
        resolved(v, SECRETS).rsplit(":", 2)[:2] for v in services["nats"]["volumes"]
    ]
    for option in ("--tlscert", "--tlskey"):
        assert nats[nats.index(option) + 1].startswith(f"{mounted}/")
    [(ca, ca_mounted)] = [
        resolved(v, SECRETS).rsplit(":", 2)[:2] for v in services["relay"]["volumes"]
    ]
    assert ca == f"{folder}/ca.pem"
    assert relay["LEDGER_RELAY_TLS_CA"] == ca_mounted
    assert nats[nats.index("--user") + 1] == url.username
    assert resolved(nats[nats.index("--pass") + 1], SECRETS) == url.password == "nats-secret"
    bare = {k: v for k, v in SECRETS.items() if k != "NATS_PASSWORD"}
    without = environment_of(services["relay"], bare)["LEDGER_RELAY_URL"]
    assert "without credentials" in " ".join(relay_production_problems(without))


@pytest.mark.parametrize("name", ["relay", "projector"])
def test_compose_gives_the_relay_and_the_projector_none_of_the_services_secrets(
    name: str,
) -> None:
    """The relay reads the database and publishes; the projector reads it, writes the views
    and sends webhooks signed with their endpoints' secrets (in the database): compose gave
    each the whole x-ledger-environment, Stripe's secret key and webhook secret and the page
    key among them, which neither reads (least privilege; docs/production.md)."""
    services = compose()["services"]
    environment = services[name]["environment"]

    secrets = {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "LEDGER_PAGE_KEY", "METRICS_TOKEN"}
    assert not secrets & set(environment), environment
    named = {v for value in map(str, environment.values()) for v in re.findall(r"\$\{(\w+)", value)}
    password = f"LEDGER_{name.upper()}_DATABASE_PASSWORD"
    assert named <= {password, "LEDGER_ENV", "NATS_PASSWORD"}
    # What it needs it has: production's settings of the database alone (and the broker).
    settings = Settings.from_env(environment_of(services[name], SECRETS), service=False)
    assert settings.production
    service = urlsplit(environment_of(services["api"], SECRETS)["DATABASE_URL"])
    assert settings.database_url is not None
    assert urlsplit(settings.database_url)._replace(netloc="") == service._replace(netloc="")
    assert name != "relay" or "LEDGER_RELAY_URL" in environment


@pytest.mark.parametrize("name", ["relay", "projector"])
def test_compose_connects_the_relay_and_the_projector_as_their_roles_with_migrates_passwords(
    name: str,
) -> None:
    """The relay reads the store and moves its own position; the projector writes the views
    and the deliveries: as ledger_service either could append events (and make tokens,
    ledger/store/sql/grants.sql)."""
    services = compose()["services"]
    url = urlsplit(environment_of(services[name], SECRETS)["DATABASE_URL"])
    service = urlsplit(environment_of(services["api"], SECRETS)["DATABASE_URL"])
    setup = environment_of(services["migrate"], SECRETS)
    password = f"LEDGER_{name.upper()}_DATABASE_PASSWORD"

    assert url.username == f"ledger_{name}"
    assert url.password == SECRETS[password]
    assert (url.hostname, url.port, url.path) == (service.hostname, service.port, service.path)
    assert setup[password] == url.password
    waits_for = services[name]["depends_on"]["migrate"]["condition"]
    assert waits_for == "service_completed_successfully"


def test_the_service_connects_as_ledger_service_never_as_the_superuser() -> None:
    services = compose()["services"]
    superuser = services["postgres"]["environment"]["POSTGRES_USER"]

    for name in ("api", "projector"):
        environment = environment_of(services[name], SECRETS)
        url = urlsplit(environment["DATABASE_URL"])
        assert url.username == ("ledger_service" if name == "api" else "ledger_projector")
        assert url.username != superuser
        assert url.password in (
            SECRETS["LEDGER_SERVICE_PASSWORD"],
            SECRETS["LEDGER_PROJECTOR_DATABASE_PASSWORD"],
        )
        assert "DATABASE_ADMIN_URL" not in environment, f"{name} must not know the superuser"
        assert SECRETS["POSTGRES_PASSWORD"] not in " ".join(environment.values())


def test_a_one_shot_migrate_step_sets_the_database_up_before_the_service_starts() -> None:
    services = compose()["services"]
    superuser = services["postgres"]["environment"]["POSTGRES_USER"]
    [(name, migrate)] = [
        (n, s)
        for n, s in ledger_services(compose()).items()
        if s["command"][1:3] == ["db", "setup"]
    ]

    assert ledger_command_problem(migrate["command"]) is None
    environment = environment_of(migrate, SECRETS)
    admin = urlsplit(environment["DATABASE_ADMIN_URL"])
    assert admin.username == superuser
    assert admin.password == SECRETS["POSTGRES_PASSWORD"]
    # The password it gives ledger_service is the one the service connects with.
    assert environment["LEDGER_SERVICE_PASSWORD"] == SECRETS["LEDGER_SERVICE_PASSWORD"]
    assert migrate.get("restart") == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for dependent in ("api", "projector"):
        condition = services[dependent]["depends_on"][name]["condition"]
        assert condition == "service_completed_successfully", dependent
    # Without the passwords compose stops before starting anything.
    with pytest.raises(ValueError, match="set LEDGER_SERVICE_PASSWORD"):
        environment_of(services["api"], {})


def nginx_configs() -> list[Path]:
    found = sorted((ROOT / "deploy").glob("nginx*.conf"))
    assert found, "no nginx configuration in deploy/"
    return found


def test_nginx_never_exposes_metrics() -> None:
    services = compose()["services"]
    metrics_port = services["api"]["environment"].get(
        "METRICS_PORT"
    ) or dockerfile_environment().get("METRICS_PORT")
    assert metrics_port
    assert metrics_port != services["api"]["environment"]["PORT"]
    assert services["proxy"]["ports"] == ["8000:8000"]
    assert "ports" not in services["api"]  # the metrics port is never published

    for config in nginx_configs():
        text = re.sub(r"#[^\n]*", "", config.read_text())  # comments say nothing
        targets = set(re.findall(r"\bset \$\w+ (\S+);", text)) | {
            t for t in re.findall(r"proxy_pass (\S+);", text) if not t.startswith("$")
        }
        assert targets == {"http://api:8000"}, config.name
        assert f":{metrics_port}" not in text, config.name
        # /metrics (and anything under it) is answered by nginx itself, 404.
        block = re.search(r"location \^~ /metrics \{([^}]*)\}", text)
        assert block, f"{config.name} has no location ^~ /metrics"
        assert block.group(1).split() == ["return", "404;"]


def _command_path(argv: list[str]) -> list[str]:
    """``ledger dev standin --port 1`` -> ``["ledger", "dev", "standin"]``."""
    return list(itertools.takewhile(lambda word: not word.startswith("-"), argv))


def test_make_cluster_runs_the_processes_commands_and_variables_of_the_compose_file() -> None:
    """`make cluster` (cluster/topology.py) and docker-compose.yml: one topology."""
    plan = Plan(
        api_addresses=[("127.0.0.1", 8001 + n) for n in range(CLUSTER_REPLICAS)],
        admin_url="postgresql://postgres@127.0.0.1:54320/ledger",
        database_url="postgresql://ledger_service@127.0.0.1:54320/ledger",
        read_url="postgresql://ledger_service@127.0.0.1:54321/ledger",
        public_url="http://127.0.0.1:8000",
        data_dir=Path(".data/cluster/data"),
        webhook_secret="whsec_test",
        page_key="k" * 64,
        standin_port=8050,  # no STRIPE_SECRET_KEY (compose: --profile standin)
        relay_url="nats://127.0.0.1:4222",  # --relay (compose: --profile relay)
        relay_database_url="postgresql://ledger_relay@127.0.0.1:54320/ledger",
        projector_database_url="postgresql://ledger_projector@127.0.0.1:54320/ledger",
    )
    ran: dict[str, list[Process]] = {}
    for process in [setup_process(plan), *ledger_processes(plan, environ={})]:
        ran.setdefault(process.service, []).append(process)
    # The relay connects as its own role in both (compose's is checked above).
    assert ran["relay"][0].env["DATABASE_URL"] == plan.relay_database_url
    assert ran["projector"][0].env["DATABASE_URL"] == plan.projector_database_url
    document = compose()
    built = ledger_services(document)

    assert set(built) == set(ran)
    for name, service in built.items():
        [command] = {tuple(_command_path(p.argv)) for p in ran[name]}
        assert _command_path(service["command"]) == list(command), name
        for process in ran[name]:
            assert set(process.env) == set(service["environment"]), name
    # Replicas: as many by default as compose runs.
    assert len(ran["api"]) == document["services"]["api"]["deploy"]["replicas"]
    # What only runs on request, in both: the stand-in without a key, the relay.
    assert document["services"]["stripe-standin"]["profiles"] == ["standin"]
    assert document["services"]["relay"]["profiles"] == ["relay"]
    without = dataclasses.replace(plan, standin_port=None, relay_url=None)
    assert {p.service for p in ledger_processes(without, environ={})} == {"api", "projector"}
    # The rest are the two PostgreSQL servers (cluster/postgres.py), nginx with the same
    # file (cluster/nginx.py) and, with the relay, the NATS server (this machine's own).
    others = set(document["services"]) - set(built)
    assert others == {"postgres", "postgres-standby", "proxy", "nats"}
    proxy_config = document["services"]["proxy"]["volumes"][0].split(":")[0]
    assert (ROOT / proxy_config).resolve() == nginx.TEMPLATE.resolve()
    assert "pg_basebackup" in (ROOT / "deploy/postgres/standby.sh").read_text()
    assert "-R" in (ROOT / "deploy/postgres/standby.sh").read_text()


def test_make_cluster_gives_each_process_its_variables_and_none_of_the_shells() -> None:
    """`make cluster` ran every process under honcho with the shell's environment and every
    common variable: the relay and the projector got Stripe's key and the page key (from the
    shell, or the cluster's env file), which compose gives neither."""
    plan = Plan(
        api_addresses=[("127.0.0.1", 8001)],
        admin_url="postgresql://postgres@127.0.0.1:54320/ledger",
        database_url="postgresql://ledger_service@127.0.0.1:54320/ledger",
        read_url=None,
        public_url="http://127.0.0.1:8000",
        data_dir=Path(".data/cluster/data"),
        webhook_secret="whsec_test",
        page_key="k" * 64,
        relay_url="nats://127.0.0.1:4222",
    )
    shell = {**os.environ, "STRIPE_SECRET_KEY": "sk_live_in_the_shell", "OTHER": "shell's"}
    base = base_environment(shell)

    for process in ledger_processes(plan, environ={"STRIPE_SECRET_KEY": "sk_live_given"}):
        name, command = procfile_line(process, ["env"], base).split(": ", 1)
        shown = subprocess.run(  # noqa: S603
            ["/bin/sh", "-c", command], env=shell, capture_output=True, text=True, check=True
        ).stdout
        got = dict(line.split("=", 1) for line in shown.splitlines())

        assert got == {**base, **process.env}, name
        assert "OTHER" not in got
        assert ("STRIPE_SECRET_KEY" in got) == (process.service == "api"), name
    assert {p.service for p in ledger_processes(plan)} >= {"projector", "relay"}


def test_make_cluster_on_a_terminal_has_its_processes_log_for_people() -> None:
    """Each process writes to honcho's pipe, so on the terminal of `make cluster` every line
    was JSON; LEDGER_LOG_FORMAT from the shell passes through (env -i kept it out)."""
    shell = {"PATH": "/usr/bin", "HOME": "/root"}

    on_terminal = base_environment(shell, on_terminal=True)
    piped = base_environment(shell, on_terminal=False)
    asked = base_environment({**shell, "LEDGER_LOG_FORMAT": "json"}, on_terminal=True)

    assert on_terminal["LEDGER_LOG_FORMAT"] == "text"
    assert "LEDGER_LOG_FORMAT" not in piped  # auto: JSON, as compose's processes log
    assert asked["LEDGER_LOG_FORMAT"] == "json"


def test_make_clusters_headline_counts_one_replica_as_one() -> None:
    assert (
        headline(1, Path("d"))
        == "ledger cluster: 1 API replica, data in d (Ctrl-C stops all of it)"
    )
    assert headline(3, Path("d")).startswith("ledger cluster: 3 API replicas, data in d")


def test_the_cluster_nginx_config_is_deploys_with_only_the_upstreams_and_paths_changed() -> None:
    template = nginx.TEMPLATE.read_text()
    rendered = nginx.render(
        template, ["10.0.0.2:8000", "10.0.0.3:8000"], "10.0.0.9:8000", Path("/run/x")
    )
    assert "server 10.0.0.2:8000 max_fails=1 fail_timeout=1s;" in rendered
    assert "server 10.0.0.3:8000 max_fails=1 fail_timeout=1s;" in rendered
    assert "listen 10.0.0.9:8000;" in rendered
    assert "set $api http://api;" in rendered
    assert "resolver" not in rendered
    # Every other line of deploy/nginx.conf is there as it is.
    kept = [line for line in template.splitlines() if "resolver" not in line]
    kept = [line for line in kept if "set $api" not in line and "listen 8000" not in line]
    assert all(line in rendered.splitlines() for line in kept)
    # --route-by-account: one account's requests to one replica.
    hashed = nginx.render(template, ["10.0.0.2:8000"], "10.0.0.9:8000", Path("/x"), by_account=True)
    assert "hash $ledger_account consistent;" in hashed
    assert "~^/v1/accounts/(?<account>[^/]+) $account;" in hashed


def test_the_cluster_nginx_closes_idle_connections_before_a_replica_would() -> None:
    """A replica closing an idle connection races nginx sending a request on it, and nginx
    answers that POST 502 without trying another replica: nginx must close them first."""
    rendered = nginx.render(
        nginx.TEMPLATE.read_text(), ["10.0.0.2:8000"], "10.0.0.9:8000", Path("/x")
    )
    idle = re.search(r"^\s*keepalive_timeout (\d+)s;$", rendered, re.MULTILINE)
    assert idle is not None, rendered
    assert int(idle[1]) < KEEP_ALIVE_SECONDS

"""``ledger dev cluster``: the whole topology on this machine until Ctrl-C.

1. The PostgreSQL primary (made on first use, kept under the data folder) and a
   standby made fresh from it with pg_basebackup each time, both started here
   and waited for, as compose waits for its database's health check.
2. The rest (API replicas, projector, Stripe stand-in, relay, nginx) under
   honcho, from a Procfile written next to the data: Ctrl-C stops them all
   (SIGTERM: requests in flight finish), then the two servers stop. They stop
   however it ends, also on a signal or an error while it starts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import click

from cluster import nginx
from cluster.postgres import PostgresError, PostgresServer, create_database, find_binaries
from cluster.topology import (
    Plan,
    Process,
    ledger_processes,
    setup_process,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Ports:
    """Where each part listens: nginx at ``base``, the replicas right after it."""

    base: int
    replicas: int
    postgres: int

    @property
    def apis(self) -> list[int]:
        return [self.base + n for n in range(1, self.replicas + 1)]

    @property
    def standby(self) -> int:
        return self.postgres + 1

    @property
    def standin(self) -> int:
        return self.base + 50

    @property
    def metrics(self) -> list[int]:
        """Each replica's /metrics (METRICS_PORT): its own port + 100."""
        return [port + 100 for port in self.apis]

    def all(self) -> list[int]:
        return [self.base, *self.apis, *self.metrics, self.postgres, self.standby, self.standin]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def kept_secret(data_dir: Path, variable: str, file_name: str, prefix: str = "") -> str:
    """``$variable`` if set, else one generated once and kept with the data: every replica
    must use the same one (a stand-in's webhook secret, the success links' key)."""
    if given := os.environ.get(variable, "").strip():
        return given
    path = data_dir / file_name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(prefix + secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def run_once(process: Process) -> None:
    """A one-shot process (the migrate step): it must succeed before the rest start."""
    done = subprocess.run(  # noqa: S603
        resolve(process.argv),
        env={**os.environ, **process.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise click.ClickException(f"{process.name} failed:\n{done.stdout}{done.stderr}")
    click.echo(done.stdout.strip())


BASE_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH")
"""What every process takes from the environment ``make cluster`` runs in, when set: where
programs are, the locale and time zone. Nothing else of it: each process gets the rest from
its ``Process.env``, as compose gives its service only its ``environment``."""


def procfile_line(process: Process, argv: list[str], base: dict[str, str]) -> str:
    """``name: exec env -i VAR=value ... command``: what honcho runs. ``env -i``: the process
    gets ``base`` (``BASE_VARIABLES``) and its own variables, not the shell's (the relay was
    given whatever the shell held, Stripe's secret key and the page key among it, which the
    relay never reads)."""
    variables = {**base, **process.env}
    assignments = [f"{k}={shlex.quote(v)}" for k, v in variables.items()]
    command = " ".join(shlex.quote(word) for word in argv)
    return f"{process.name}: exec {' '.join(['env', '-i', *assignments])} {command}"


def base_environment(environ: Mapping[str, str], *, on_terminal: bool = False) -> dict[str, str]:
    """``BASE_VARIABLES`` of ``environ``, with this virtualenv's programs first on PATH, and
    ``LEDGER_LOG_FORMAT`` as ``environ`` sets it, else ``text`` when honcho writes to a
    terminal (``on_terminal``): each process's output is honcho's pipe, so every line was
    JSON on the terminal of a newcomer running ``make cluster``."""
    base = {name: environ[name] for name in BASE_VARIABLES if name in environ}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    if log_format := environ.get("LEDGER_LOG_FORMAT", "").strip() or (
        "text" if on_terminal else ""
    ):
        base["LEDGER_LOG_FORMAT"] = log_format
    return base


def headline(replicas: int, data_dir: Path) -> str:
    """The first line of the table ``make cluster`` prints (it said "1 API replicas")."""
    plural = "" if replicas == 1 else "s"
    return (
        f"ledger cluster: {replicas} API replica{plural}, data in {data_dir} "
        "(Ctrl-C stops all of it)"
    )


def resolve(argv: list[str]) -> list[str]:
    """``ledger ...`` as this virtualenv's ``ledger`` program."""
    if argv and argv[0] == "ledger":
        return [str(Path(sys.executable).parent / "ledger"), *argv[1:]]
    return argv


def run_cluster(
    *,
    replicas: int,
    port: int,
    pg_port: int,
    data_dir: Path,
    relay_url: str | None,
    pg_bin: str | None,
    by_account: bool = False,
) -> int:
    """Start everything, print where each part listens, run until Ctrl-C; honcho's exit code."""
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent)) or shutil.which("honcho")
    if honcho is None:
        raise click.ClickException("no honcho: `make cluster` installs it (pip install honcho)")
    ports = Ports(port, replicas, pg_port)
    taken = [p for p in ports.all() if not port_is_free(p)]
    if taken:
        raise click.ClickException(
            f"ports in use: {', '.join(map(str, taken))} (choose others with --port / --pg-port)"
        )
    try:
        binaries = find_binaries(pg_bin)
    except PostgresError as error:
        raise click.ClickException(str(error)) from None
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    primary = PostgresServer(
        "primary", binaries, data_dir / "pg-primary", "127.0.0.1", ports.postgres
    )
    standby = PostgresServer(
        "standby", binaries, data_dir / "pg-standby", "127.0.0.1", ports.standby
    )
    with stopped_on_any_exit(standby, primary):
        try:
            start_servers(primary, standby)
        except PostgresError as error:
            raise click.ClickException(str(error)) from None
        return run_the_rest(
            honcho=honcho,
            ports=ports,
            replicas=replicas,
            data_dir=data_dir,
            primary=primary,
            standby=standby,
            relay_url=relay_url,
            by_account=by_account,
        )


def start_servers(primary: PostgresServer, standby: PostgresServer) -> None:
    """The primary (made on first use) with the ledger's database, then a fresh standby."""
    if not primary.initialised:
        click.echo(f"making the primary's data folder {primary.data_dir} (initdb)")
        primary.initdb()
    primary.start()
    create_database(primary)
    click.echo("copying the primary into a fresh standby (pg_basebackup)")
    standby.make_standby_of(primary)
    standby.start()


def run_the_rest(
    *,
    honcho: str,
    ports: Ports,
    replicas: int,
    data_dir: Path,
    primary: PostgresServer,
    standby: PostgresServer,
    relay_url: str | None,
    by_account: bool,
) -> int:
    """The migrate step, then everything else under honcho until it ends; its exit code."""
    public_url = f"http://127.0.0.1:{ports.base}"
    secrets_dir = data_dir / "data"
    plan = Plan(
        api_addresses=[("127.0.0.1", p) for p in ports.apis],
        admin_url=primary.url(),
        database_url=primary.url(user="ledger_service"),
        relay_database_url=primary.url(user="ledger_relay"),
        projector_database_url=primary.url(user="ledger_projector"),
        read_url=standby.url(user="ledger_service"),
        public_url=public_url,
        data_dir=secrets_dir,
        webhook_secret=kept_secret(
            secrets_dir, "STRIPE_WEBHOOK_SECRET", "stripe-webhook-secret", "whsec_"
        ),
        page_key=kept_secret(secrets_dir, "LEDGER_PAGE_KEY", "page-key"),
        metrics_ports=ports.metrics,
        standin_port=None if os.environ.get("STRIPE_SECRET_KEY") else ports.standin,
        relay_url=relay_url,
    )
    run_once(setup_process(plan))
    processes = ledger_processes(plan)
    base = base_environment(os.environ, on_terminal=sys.stdout.isatty())
    lines = [procfile_line(p, resolve(p.argv), base) for p in processes]
    proxy = ""
    try:
        command = nginx.prepare(
            [f"127.0.0.1:{p}" for p in ports.apis],
            f"127.0.0.1:{ports.base}",
            data_dir / "nginx",
            by_account=by_account,
        )
    except nginx.NginxUnavailable as error:
        click.echo(f"warning: {error}; the replicas answer on their own ports only", err=True)
    else:
        lines.append("proxy: exec " + " ".join(shlex.quote(word) for word in command))
        proxy = public_url
    procfile = data_dir / "Procfile"
    procfile.unlink(missing_ok=True)
    # Readable by its owner only: the page key and the webhook secret are in it.
    with os.fdopen(os.open(procfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write("\n".join(lines) + "\n")

    click.echo(f"\n{headline(replicas, data_dir)}")
    rows = [
        ("proxy (nginx)", f"{proxy or '(not running)'}   <- the entry point: deploy/nginx.conf"),
        *((p.name, p.listens) for p in processes),
        ("migrate", "`ledger db setup`, done"),
        ("postgres primary", f"{primary.url()}   (log {primary.log_file})"),
        ("postgres standby", f"{standby.url()}   (hot standby; DATABASE_READ_URL)"),
    ]
    for name, where in rows:
        click.echo(f"  {name:<17} {where}")
    click.echo(f"  processes: {procfile} (run by honcho)\n")

    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    supervisor = subprocess.Popen(  # noqa: S603
        [honcho, "start", "-f", str(procfile), "-e", os.devnull, "-d", str(ROOT)],
        env=environment,
    )
    try:
        # SIGTERM (from a service manager) stops it as Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: supervisor.send_signal(signal.SIGTERM))
        while True:
            try:
                return supervisor.wait()
            except KeyboardInterrupt:
                # A terminal's Ctrl-C reached honcho too; a SIGINT sent to this process
                # alone did not, and it ran on.
                supervisor.send_signal(signal.SIGINT)
    finally:
        if supervisor.poll() is None:
            supervisor.terminate()
            supervisor.wait()


def _end_by_sigterm(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stopped_on_any_exit(*servers: PostgresServer) -> Iterator[None]:
    """Stop ``servers`` however the block ends: done, an error, Ctrl-C or SIGTERM.

    SIGTERM ends the block as ``SystemExit(143)``, the code honcho ends with on it: its
    default action ended this process on the spot while it started, and the servers (in
    sessions of their own) ran on. A second signal while they stop is ignored, so that it
    cannot cut the stopping short."""
    previous = signal.signal(signal.SIGTERM, _end_by_sigterm)
    try:
        yield
    finally:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if any(server.running for server in servers):
            click.echo("stopping the standby and the primary")
        for server in servers:
            server.stop()
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, previous)

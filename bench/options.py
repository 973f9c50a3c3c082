"""``bench.run_all``'s command line: sizes, durations, PostgreSQL configurations."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from bench.append_rate import client_counts
from bench.postgres import CONFIGURATIONS


@dataclass(frozen=True)
class Options:
    events: int
    history: int
    accounts: int
    connections: int
    seconds: int
    rounds: int
    warmup: int
    latency_requests: int
    rebuild_seconds: float | None
    append_seconds: float
    append_clients: list[int]
    profile: Path | None
    profile_seconds: int
    profile_each: bool
    """Profile on every configuration, not only the first (the stage split depends on the
    API process, hardly on the database)."""
    configurations: list[str]
    """``embedded`` and/or ``tcp``, or ``given`` (``--database-url``)."""
    database_url: str | None = None


def _configurations(text: str) -> list[str]:
    keys = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [key for key in keys if key not in CONFIGURATIONS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(CONFIGURATIONS)}")
    return keys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_all",
        description="Run every benchmark of the performance issue against baselines measured"
        " in the same run, on each PostgreSQL configuration; print one markdown table and the"
        " CPU budget.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="small and short: a smoke run")
    add("--events", type=int, help="events to replay (default 1,000,000; quick 100,000)")
    add("--history", type=int, help="events of the long account (default 100,000; quick 10,000)")
    add("--seconds", type=int, help="measured seconds per round and load (default 4; quick 3)")
    add("--rounds", type=int, help="interleaved rounds per load (default 2; quick 1)")
    add("--connections", type=int, default=64, help="HTTP clients (default 64)")
    add("--accounts", type=int, default=1000, help="accounts spent on (default 1,000)")
    add("--append-seconds", type=float, help="append_rate: seconds per design and client count"
        " (default 2; quick 1)")  # fmt: skip
    add("--append-clients", type=client_counts, default=[1, 8, 32],
        help="append_rate's client counts (default 1,8,32)")  # fmt: skip
    add("--full-rebuild", action="store_true",
        help="time `ledger projections rebuild` to the end instead of for at most 10 s")  # fmt: skip
    add("--profile", type=Path, help="record py-spy profiles of the API process here and split"
        " the CPU budget by stage (one extra load per kind of request)")  # fmt: skip
    add("--profile-seconds", type=int, help="seconds per profiled load (default 3)")
    add("--profile-each", action="store_true",
        help="profile on every PostgreSQL configuration (default: the first only)")  # fmt: skip
    add("--postgres", type=_configurations, default=list(CONFIGURATIONS),
        help="comma-separated configurations: embedded (Unix socket), tcp (127.0.0.1:5432, when"
        " one answers); default both")  # fmt: skip
    add("--database-url", help="run on this PostgreSQL server only (a role that may create"
        " databases and roles); default: DATABASE_URL, else --postgres")  # fmt: skip
    return parser


def parse_args(argv: list[str] | None = None) -> Options:
    parser = _parser()
    args = parser.parse_args(argv)
    quick = args.quick
    database_url = args.database_url or os.environ.get("DATABASE_URL") or None
    options = Options(
        events=args.events or (100_000 if quick else 1_000_000),
        history=args.history or (10_000 if quick else 100_000),
        accounts=args.accounts,
        connections=args.connections,
        seconds=args.seconds or (3 if quick else 4),
        rounds=args.rounds or (1 if quick else 2),
        warmup=1,
        latency_requests=100 if quick else 300,
        rebuild_seconds=None if args.full_rebuild else 10.0,
        append_seconds=args.append_seconds or (1.0 if quick else 2.0),
        append_clients=args.append_clients,
        profile=args.profile,
        profile_seconds=args.profile_seconds or 3,
        profile_each=args.profile_each,
        configurations=["given"] if database_url else args.postgres,
        database_url=database_url,
    )
    if options.accounts > 10_000:
        parser.error("--accounts is at most 10,000 (account ids have four digits)")
    return options

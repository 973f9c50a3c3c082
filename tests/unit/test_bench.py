"""The benchmark's own logic: how profile samples become CPU budget stages, its options,
and the bare baseline app (no load is generated here; `make bench` does that)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import psutil
import pytest
from litestar.testing import TestClient

from bench.baseline_app import create_app
from bench.cpu_budget import DRIVER, OTHER, Budget, stage_of, stage_shares
from bench.machine import short_stack
from bench.measure import Phase, combine, run_queue_seconds
from bench.options import parse_args
from bench.workers import report as workers_report

ROOT = "<module> (ledger:8);serve (api/cli.py:103);Runner.run (asyncio/runners.py:118)"
ROUTE = (
    "RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:422);"
    "Litestar.__call__ (litestar/app.py:623);"
    "RequestCounter.middleware.<locals>.counted (api/metrics.py:81);"
    "HTTPRoute.handle (litestar/routes/http.py:81);"
    "spend_credits (api/routes/internal.py:140)"
)


def stack(*frames: str) -> list[tuple[str, str]]:
    from bench.cpu_budget import frames as parse

    return parse(";".join(frames))


def test_a_sample_goes_to_the_innermost_frame_a_rule_names() -> None:
    loading = stack(ROOT, ROUTE, "Ledger.execute (ledger/service.py:80)",
                    "Connection.fetch (asyncpg/connection.py:690)")  # fmt: skip
    assert stage_of(loading) == "load and decide"
    handing_off = stack(ROOT, "GroupCommitter._write_batches (ledger/store/commit.py:150)",
                        "Connection.fetch (asyncpg/connection.py:690)")  # fmt: skip
    assert stage_of(handing_off) == "group-commit hand-off"
    assert stage_of(stack(ROOT, ROUTE, "checked_idempotency_key (api/validation.py:140)")) == (
        "body decoding and validation"
    )
    assert stage_of(stack(ROOT, ROUTE, "require_scope (api/access/guards.py:42)")) == "auth"


def test_the_express_lanes_frames_have_their_stages() -> None:
    lane = "express.<locals>.wrap.<locals>.lane (api/express.py:105)"
    assert stage_of(stack(ROOT, lane)) == "routing and middleware"
    assert stage_of(stack(ROOT, lane, "Call.body_as (api/express.py:63)")) == (
        "body decoding and validation"
    )
    assert stage_of(stack(ROOT, lane, "_answer_json (api/express.py:152)")) == "response"
    assert stage_of(stack(ROOT, lane, "authenticate (api/access/guards.py:60)")) == "auth"


def test_the_server_sending_the_answer_is_the_response_not_the_parsing() -> None:
    sending = stack(ROOT, ROUTE.rsplit(";", 1)[0],
                    "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:463)")  # fmt: skip
    assert stage_of(sending) == "response"
    parsing = stack(
        ROOT, "HttpToolsProtocol.data_received (uvicorn/protocols/http/httptools_impl.py:180)"
    )
    assert stage_of(parsing) == "HTTP parsing"


def test_the_loop_alone_and_asyncpg_tasks_are_their_own_stages() -> None:
    assert stage_of(stack(ROOT)) == OTHER
    assert stage_of(stack("Connection.execute (asyncpg/connection.py:350)")) == DRIVER


def test_blocked_threads_are_left_out_and_shares_scale_the_measured_total(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        f"{ROOT};{ROUTE};Ledger.execute (ledger/service.py:80) 30\n"
        f"{ROOT};{ROUTE} 10\n"
        "Thread._bootstrap (threading.py:1002);_wait_timed (api/supervision.py:89);"
        "Popen._try_wait (subprocess.py:1953) 500\n"
    )
    shares = stage_shares(raw)
    assert shares.samples == 40
    budget = Budget("spend", 400.0, shares, target_us=250.0)
    assert budget.stage_us("load and decide") == pytest.approx(300.0)
    assert budget.stage_us("body decoding and validation") == pytest.approx(100.0)
    assert budget.met is False


def test_options_default_to_both_configurations_and_a_given_url_replaces_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    quick = parse_args(["--quick"])
    assert quick.configurations == ["embedded", "tcp"]
    assert (quick.events, quick.seconds, quick.rounds) == (100_000, 3, 1)
    given = parse_args(["--database-url", "postgresql://postgres@db/x"])
    assert given.configurations == ["given"]


def test_stacks_are_shortened_for_table_cells() -> None:
    assert (
        short_stack("uvicorn 0.54.0 + uvloop 0.23.0 + httptools 0.9.0")
        == "uvicorn+uvloop+httptools"
    )
    assert short_stack("granian 2.8.9 (asgi, uvloop 0.23.0)") == "granian+uvloop"


def test_the_bare_json_endpoint_answers_without_a_database() -> None:
    with TestClient(create_app(None)) as client:
        answer = client.get("/hello")
    assert answer.status_code == 200
    assert answer.json() == {"hello": "world"}


def _phase(
    rate: float, requests: int, tree_cpu_seconds: float, machine_percent: float = 0.0
) -> Phase:
    latency = {key: 10_000 for key in ("p50", "p90", "p99", "max", "mean")}
    result = {"rate": rate, "requests": requests, "latency_us": latency, "duration_us": 1e6,
              "statuses": {}, "non_2xx": 0, "socket_errors": 0}  # fmt: skip
    return Phase(result, 0.0, tree_cpu_seconds, 1.0, machine_percent)


def test_the_wait_for_a_core_adds_up_every_thread_s_run_queue_time(tmp_path: Path) -> None:
    process = psutil.Process(os.getpid())
    tasks = tmp_path / str(process.pid) / "task"
    for tid, schedstat in (("1", "9000 2000000000 40\n"), ("2", "10 500000000 3\n"), ("3", "")):
        (tasks / tid).mkdir(parents=True)
        (tasks / tid / "schedstat").write_text(schedstat)  # thread 3: ended while read
    assert run_queue_seconds([process], proc=tmp_path) == 2.5
    assert run_queue_seconds([process], proc=tmp_path / "elsewhere") == 0.0

    rounds = [_phase(100, 100, 1.0), _phase(100, 100, 1.0)]
    rounds[0].api_wait_seconds, rounds[1].api_wait_seconds = 0.1, 0.3
    both = combine(rounds)
    assert both.api_wait_seconds == pytest.approx(0.4)
    assert both.server_wait == pytest.approx(20.0)  # of the two rounds' 2 s


def test_the_workers_report_gives_ratios_to_the_bare_baseline_and_to_one_worker() -> None:
    phases = {
        ("spend", "bare"): _phase(4000, 4000, 0.8),
        ("spend", "1 worker"): _phase(2000, 2000, 0.6),
        ("spend", "2 workers"): _phase(3000, 3000, 0.9),
        ("credits", "bare"): _phase(20000, 20000, 0.8),
        ("credits", "1 worker"): _phase(5000, 5000, 1.0),
        ("credits", "2 workers"): _phase(4000, 4000, 1.0),
    }
    rows = workers_report(phases, seconds=5, rounds=3).splitlines()
    assert "| spend | `ledger serve --workers 2` | 3,000 | 10.0 | 300 | 0.75x | 1.50x |" in rows
    assert "| credits | `ledger serve --workers 1` | 5,000 | 10.0 | 200 | 0.25x | 1.00x |" in rows
    assert "| credits | bare JSON | 20,000 | 10.0 | 40 | 1.00x | — |" in rows


def test_a_comparison_of_checkouts_is_against_its_first_variant_round_by_round() -> None:
    from bench.serve_compare import rounds_table

    rates = {"bare": (4000, 4000), "before": (2000, 3000), "after": (2500, 2900)}
    rounds = {
        (kind, label): [_phase(rate, rate, 1.0, 150.0) for rate in by_round]
        for kind in ("spend", "credits", "webhook")
        for label, by_round in rates.items()
        if (kind, label) != ("webhook", "bare")  # measured against the bare INSERT
    }
    combined = {key: combine(phases) for key, phases in rounds.items()}

    table = workers_report(combined, 4, 2, {"before": "`before`", "after": "`after`"}, "before")
    by_round = rounds_table(rounds, ["before", "after"]).splitlines()

    assert "| vs bare | vs `before` |" in table.splitlines()[0]
    assert "| spend | `after` | 2,700 | 10.0 | 370 | 0.68x | 1.08x |" in table.splitlines()
    # The machine busy 1.5 s in each 1 s round: 600 and 517 µs a request, median 559.
    assert "| spend | after | 2,500, 2,900 | 1 of 2 | 559 |" in by_round
    assert "| spend | before | 2,000, 3,000 | — | 625 |" in by_round
    assert "| webhook | `after` | 2,700 | 10.0 | 370 | 0.68x | 1.08x |" in table.splitlines()
    assert "| webhook | after | 2,500, 2,900 | 1 of 2 | 559 |" in by_round


def test_over_a_comparison_s_orders_each_server_follows_each_as_often() -> None:
    from collections import Counter

    from bench.workers import turns

    orders = turns(["bare", "before", "after"])
    follows = Counter(pair for order in orders for pair in itertools.pairwise(order))

    assert len(orders) == 6
    assert set(follows.values()) == {2}
    assert len(follows) == 6  # every ordered pair of the three
    assert turns(["a", "b", "c", "d"])[1] == ["b", "c", "d", "a"]


def test_the_append_target_is_the_per_call_design_and_the_committer_a_row_beside_it() -> None:
    from bench.append_rate import DESIGNS, Tally
    from bench.postgres import Configuration
    from bench.results import Results
    from bench.table import append_rows

    rates = {"plain": 1000, "lock": 500, "append": 950, "committer": 3000}
    tallies = [Tally(rates[d.key], 1.0, [0.001, 0.002]) for d in DESIGNS]
    results = Results(
        Configuration("embedded", "postgresql://x@/y?host=/tmp", "embedded"),
        appends=[(1, tallies), (8, tallies)],
    )

    target, committer = append_rows(results)

    assert (target.ratio, target.met) == ("0.95x", True)
    assert (committer.ratio, committer.target, committer.met) == ("3.00x", "—", None)
    assert "group committer" in committer.benchmark


def test_the_projector_comparison_reads_its_variants_and_the_machine_s_busy_time() -> None:
    from bench.measure import machine_busy_seconds
    from bench.rebuild_compare import parse_variant
    from bench.variants import named_checkout

    name, code = named_checkout("before=/tmp/base")
    assert (name, code.is_absolute(), code.name) == ("before", True, "base")
    assert parse_variant("after=.:jobs=2") == ("after", Path.cwd(), 2)
    before = machine_busy_seconds()
    sum(i * i for i in range(2_000_000))  # some CPU of this process
    assert machine_busy_seconds() > before > 0


async def test_a_variant_process_imports_the_variant_s_code_not_the_project_s(
    tmp_path: Path,
) -> None:
    """``python -c`` puts its working directory first on ``sys.path``: from the project,
    every variant imported the project's own ``projections`` (fixed in ``runs_in``)."""
    import asyncio
    import sys

    from bench.variants import runs_in

    (tmp_path / "projections").mkdir()
    (tmp_path / "projections" / "__init__.py").write_text("")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import projections; print(projections.__file__)",
        stdout=asyncio.subprocess.PIPE,
        **runs_in(tmp_path),
    )
    out, _ = await process.communicate()

    assert Path(out.decode().strip()).parent == tmp_path / "projections"

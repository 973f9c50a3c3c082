"""The CPU budget of a request: what the API process spends on one, by stage.

Total: the API process's CPU time (psutil ``cpu_times()``, user + system, of the
``ledger serve`` process, not of its child the projector) over a measured load, divided
by the requests answered (``bench.measure.Phase.cpu_us_per_request``).

Stages: a py-spy profile of the same process under the same load (``py-spy record
--format raw``, 200 Hz, only threads that are not idle) gives each stage its share of
the samples; a stage's µs per request is its share times the total. Each sample goes
to the stage of its innermost frame that a rule below names (from the leaf towards the
root): a frame no rule names (asyncio, asyncpg, contextlib, uuid, hmac, ...) counts for
whichever named frame called it, so asyncpg under ``ledger/store/commit.py`` is the
group-commit hand-off and asyncpg under ``ledger/unit_of_work.py`` is load and decide.
msgspec runs in C and has no frames: its decoding counts for the ``api/`` function
that called it, its encoding for Litestar's ``render``. Samples in which no frame is
named (uvloop's own loop, in C; the interpreter between tasks; background tasks) are
"event loop and other", except those in asyncpg's own tasks (a pool connection's reset
after its release runs in a task of its own, whose stack does not say which request
released it): "asyncpg in its own tasks". Threads waiting in a blocking call that py-spy does not know
as idle (the projector's supervisor in ``Popen.wait``, idle executor workers) are left
out: they use no CPU.

    python -m bench.cpu_budget PROFILE.txt [--us-per-request 1200]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

STAGES = (
    "HTTP parsing",
    "routing and middleware",
    "auth",
    "body decoding and validation",
    "load and decide",
    "encoding",
    "group-commit hand-off",
    "metrics and logging",
    "response",
    "asyncpg in its own tasks",
    "event loop and other",
)
DRIVER = STAGES[-2]
OTHER = STAGES[-1]

TARGETS_US = {"spend": 250.0, "webhook": 400.0, "credits": 100.0}
"""The performance issue's budgets: CPU µs per request of the API process."""


@dataclass(frozen=True)
class Rule:
    stage: str
    path: str
    """A prefix of the frame's file as py-spy prints it (``litestar/app.py``, ``api/``)."""
    functions: tuple[str, ...] = ()
    """If given, the frame's function must end with one of these."""

    def matches(self, function: str, path: str) -> bool:
        if not path.startswith(self.path):
            return False
        return not self.functions or function.endswith(self.functions)


# The first rule that names a frame decides its stage; order matters within a file.
RULES = (
    Rule("metrics and logging", "api/metrics.py"),
    Rule("metrics and logging", "api/log_context.py"),
    Rule("metrics and logging", "logging/"),
    Rule("group-commit hand-off", "ledger/store/commit.py"),
    Rule("auth", "api/access/"),
    Rule("auth", "api/app.py", ("provide_principal",)),
    Rule("auth", "ledger/adapters/stripe_webhooks.py", ("verify_signature",)),
    Rule("body decoding and validation", "ledger/adapters/stripe_webhooks.py"),
    Rule("body decoding and validation", "api/validation.py"),
    Rule("body decoding and validation", "api/openapi.py"),
    Rule("body decoding and validation", "ledger/commands.py"),
    Rule("body decoding and validation", "api/routes/"),
    Rule("body decoding and validation", "api/express.py", ("body_as", "idempotency_key")),
    Rule("body decoding and validation", "api/express.py", ("header", "_read_body")),
    Rule("response", "api/express.py", ("_answer_json",)),  # msgspec's encoding counts here
    Rule("encoding", "api/schemas.py"),
    Rule("encoding", "litestar/serialization/"),
    Rule("encoding", "litestar/response/", ("render",)),
    Rule("load and decide", "ledger/"),
    Rule("load and decide", "eventsourcing/"),
    Rule("load and decide", "projections/"),
    Rule("load and decide", "bench/baseline_app.py", ("insert",)),  # the bare app's one write
    Rule("response", "litestar/response/"),
    Rule("response", "uvicorn/protocols/http/", ("send",)),
    Rule("response", "api/http_writes.py", ("write", "_send_held")),  # the turn's held answers
    Rule("HTTP parsing", "api/http_writes.py"),
    Rule("response", "asyncio/selector_events.py", ("write",)),
    Rule("response", "h11/", ("send", "send_with_data_passthrough")),
    Rule("HTTP parsing", "uvicorn/protocols/"),
    Rule("HTTP parsing", "h11/"),
    Rule("HTTP parsing", "httptools/"),
    Rule("routing and middleware", "litestar/"),
    Rule("routing and middleware", "uvicorn/middleware/"),
    Rule("routing and middleware", "api/app.py"),
    Rule("routing and middleware", "api/errors.py"),
    Rule("routing and middleware", "api/services.py"),
    Rule("routing and middleware", "api/express.py"),
)

_FRAME = re.compile(r"(?P<function>.*) \((?P<path>.*?):\d+\)$")
_WAITING = (
    ("_worker", "concurrent/futures/thread.py"),
    ("wait", "threading.py"),
    ("_try_wait", "subprocess.py"),
    ("select", "selectors.py"),
)


def frames(stack: str) -> list[tuple[str, str]]:
    """(function, path) of each frame, root first."""
    found = []
    for text in stack.split(";"):
        match = _FRAME.match(text)
        if match:
            found.append((match["function"], match["path"]))
    return found


def stage_of(stack: list[tuple[str, str]]) -> str:
    """The stage of the innermost frame some rule names, else "event loop and other"."""
    for function, path in reversed(stack):
        for rule in RULES:
            if rule.matches(function, path):
                return rule.stage
    if any(path.startswith("asyncpg/") for _, path in stack):
        return DRIVER
    return OTHER


def waiting(stack: list[tuple[str, str]]) -> bool:
    """A thread blocked in a call py-spy does not know as idle."""
    if not stack:
        return True
    function, path = stack[-1]
    return any(function.endswith(f) and path.endswith(p) for f, p in _WAITING)


@dataclass
class Shares:
    """Samples per stage in one profile, and the most common unnamed leaves."""

    samples: int = 0
    by_stage: Counter[str] = field(default_factory=Counter)
    unnamed: Counter[str] = field(default_factory=Counter)

    def share(self, stage: str) -> float:
        return self.by_stage[stage] / self.samples if self.samples else 0.0


def stage_shares(raw: Path) -> Shares:
    """Each stage's samples in a ``py-spy record --format raw`` file."""
    shares = Shares()
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        stack = frames(stack_text)
        if waiting(stack):
            continue
        count = int(count_text)
        stage = stage_of(stack)
        shares.samples += count
        shares.by_stage[stage] += count
        if stage == OTHER:
            function, path = stack[-1]
            shares.unnamed[f"{function} ({path})"] += count
    return shares


@dataclass(frozen=True)
class Budget:
    """One kind of request: CPU µs measured, and its split by stage if profiled."""

    name: str
    us_per_request: float
    shares: Shares | None = None
    target_us: float | None = None

    def stage_us(self, stage: str) -> float | None:
        return None if self.shares is None else self.us_per_request * self.shares.share(stage)

    @property
    def met(self) -> bool | None:
        return None if self.target_us is None else self.us_per_request <= self.target_us


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpu_budget",
        description="Split a py-spy raw profile of the API process into the CPU budget's"
        " stages (share of samples; µs per request with --us-per-request).",
    )
    parser.add_argument("profile", type=Path, help="a file from `py-spy record --format raw`")
    parser.add_argument("--us-per-request", type=float, help="the measured CPU µs per request")
    args = parser.parse_args(argv)
    shares = stage_shares(args.profile)
    print(f"{shares.samples} samples")
    for stage in STAGES:
        line = f"{100 * shares.share(stage):6.1f} %  {stage}"
        if args.us_per_request:
            line += f"  ({args.us_per_request * shares.share(stage):,.0f} µs)"
        print(line)
    print("\nunnamed leaves (event loop and other):")
    for leaf, count in shares.unnamed.most_common(10):
        print(f"{100 * count / shares.samples:6.1f} %  {leaf}")


if __name__ == "__main__":
    main()

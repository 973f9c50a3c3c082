"""What one PostgreSQL configuration's run measured, filled in phase by phase."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import generate, replay
from bench.append_rate import Tally
from bench.measure import Phase
from bench.postgres import Configuration, ServerFacts

# The measured loads, by name.
SPEND = "spend"
WEBHOOK = "webhook"
CREDITS = "credits"
INSERT = "insert/uvicorn"
INSERT_GRANIAN = "insert/granian"
HELLO = "hello/uvicorn"
HELLO_GRANIAN = "hello/granian"
HELLO_PER_TURN = "hello/uvicorn-reads-per-turn"

SERVICE = "ledger serve"
"""The key of the service's stack in ``Results.stacks`` (the others: the baselines' stacks,
``uvicorn``, ``granian`` and ``bench.service.READS_PER_TURN``)."""


@dataclass
class Results:
    configuration: Configuration
    server: ServerFacts | None = None
    wall: float = 0.0
    appends: list[tuple[int, list[Tally]]] = field(default_factory=list)
    generated: generate.Generated | None = None
    history_seconds: float = 0.0
    replay: dict[str, replay.Timed] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, Phase] = field(default_factory=dict)
    stacks: dict[str, str] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    drain_seconds: list[float] = field(default_factory=list)
    catchup_seconds: float = 0.0
    view_rates: dict[str, list[float]] = field(default_factory=dict)
    view_lags: dict[str, list[float]] = field(default_factory=dict)
    rss_idle: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    setup_seconds: dict[str, float] = field(default_factory=dict)
    profiled: bool = False
    """Whether this configuration's run records py-spy profiles."""
    profiles: dict[str, Path] = field(default_factory=dict)
    """py-spy raw profiles by load name (``--profile``)."""
    load_average: str = ""
    notes: list[str] = field(default_factory=list)

    def phase(self, name: str) -> Phase:
        return self.phases[name]

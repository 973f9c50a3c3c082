"""``--jobs`` when not given (`audit verify`, `projections rebuild`): fit to the store."""

from __future__ import annotations

import pytest

from api import cli_support
from api.cli_support import EVENTS_PER_JOB, MAX_JOBS, default_jobs


@pytest.mark.parametrize(
    ("head_position", "cpus", "jobs"),
    [
        (0, 8, 1),
        (5, 8, 1),  # `make run`'s store: 2.6 s with a process per CPU, 0.1 s with one
        (2 * EVENTS_PER_JOB - 1, 8, 1),
        (2 * EVENTS_PER_JOB, 8, 2),
        (5 * EVENTS_PER_JOB, 8, 5),
        (5 * EVENTS_PER_JOB, 2, 2),
        (10**9, 8, 8),
        (10**9, 1, 1),
        (10**9, 256, MAX_JOBS),
    ],
)
def test_a_process_per_share_of_the_store_at_most_one_per_cpu(
    monkeypatch: pytest.MonkeyPatch, head_position: int, cpus: int, jobs: int
) -> None:
    monkeypatch.setattr(cli_support.os, "cpu_count", lambda: cpus)
    assert default_jobs(head_position) == jobs

"""Prometheus text exposition (format 0.0.4), written by hand: a few counters and one histogram.

What each metric means is listed in docs/operations-metrics.md. Everything on the
request path is a dict increment or two; formatting happens only when ``/metrics``
is scraped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping

import asyncpg
import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ledger.store import stats
from ledger.store.mapper import event_type_name

STARTED = time.time()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request latency histogram's buckets; +Inf follows."""

_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")

WEBHOOK_OUTCOMES = ("applied", "duplicate", "ignored", "bad_signature", "malformed")
"""Stripe deliveries: applied (new, acted on), duplicate (seen before: nothing done),
ignored (new, a type the ledger does not act on), bad_signature and malformed (400)."""

webhook_outcomes: Counter[str] = Counter()
"""Stripe deliveries by outcome (one of WEBHOOK_OUTCOMES), counted by the webhook route."""

UNMATCHED_ROUTE = "unmatched"
"""The route label of a request that matched no route (Litestar answers those before us)."""


class RequestCounter:
    """Counts and times answered HTTP requests (an ASGI middleware).

    Requests are labelled by the route's path template (``/v1/accounts/{account_id}/spend``),
    never the raw path, so the number of series stays bounded by the routes.
    """

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()
        """Answers by (method, exact status)."""
        self.latency: dict[tuple[str, str, str], list[float]] = {}
        """(route, method, status class) -> per-bucket counts, the +Inf bucket, then the sum."""

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        status_class = _STATUS_CLASSES[status // 100] if 0 <= status < 600 else "5xx"
        key = (route, method, status_class)
        series = self.latency.get(key)
        if series is None:
            series = self.latency[key] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        series[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series[-1] += seconds

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return

            method = str(scope.get("method", ""))
            status = 500  # if the app fails before it starts an answer
            started = time.perf_counter()

            async def send_counting(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    self.counts[(method, status)] += 1
                await send(message)

            try:
                await app(scope, receive, send_counting)
            finally:
                route = scope.get("path_template") or UNMATCHED_ROUTE
                self.observe(route, method, status, time.perf_counter() - started)

        return counted


class ViewLag(msgspec.Struct, frozen=True):
    """How far one projection is behind the event store."""

    position: int
    lag_events: int
    lag_seconds: float
    """Age of the oldest event the view has not applied yet (0 when caught up)."""


class GroupCommitUse(msgspec.Struct, frozen=True):
    """What the group committer has written since the process started."""

    batches: int
    commands: int


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _request_histogram(counter: RequestCounter) -> list[str]:
    name = "ledger_http_request_duration_seconds"
    samples: list[str] = []
    for (route, method, status_class), series in sorted(counter.latency.items()):
        labels = f'route="{_label(route)}",method="{method}",status="{status_class}"'
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS, series, strict=False):
            cumulative += int(count)
            samples.append(f'{name}_bucket{{{labels},le="{bound}"}} {cumulative}')
        cumulative += int(series[len(LATENCY_BUCKETS)])
        samples.append(f'{name}_bucket{{{labels},le="+Inf"}} {cumulative}')
        samples.append(f"{name}_sum{{{labels}}} {_number(series[-1])}")
        samples.append(f"{name}_count{{{labels}}} {cumulative}")
    return _family(
        name,
        "histogram",
        "Time to answer HTTP requests, by route template, method and status class.",
        samples,
    )


def _events_by_type(appended: Mapping[str, int]) -> dict[str, int]:
    by_type: Counter[str] = Counter()
    for topic, count in list(appended.items()):
        by_type[event_type_name(topic)] += count
    return dict(by_type)


def exposition(
    counter: RequestCounter,
    *,
    head: int,
    views: Mapping[str, ViewLag],
    pool: asyncpg.Pool,
    group_commit: GroupCommitUse,
    webhooks: Mapping[str, int],
) -> str:
    """The metrics page."""
    pool_size, pool_idle = pool.get_size(), pool.get_idle_size()
    lines = [
        *_family(
            "ledger_http_requests_total",
            "counter",
            "HTTP requests answered, by method and exact status.",
            (
                f'ledger_http_requests_total{{method="{method}",status="{status}"}} {count}'
                for (method, status), count in sorted(counter.counts.items())
            ),
        ),
        *_request_histogram(counter),
        *_family(
            "ledger_events_appended_total",
            "counter",
            "Events this process appended to the store, by event type.",
            (
                f'ledger_events_appended_total{{type="{_label(kind)}"}} {count}'
                for kind, count in sorted(_events_by_type(stats.events_appended).items())
            ),
        ),
        *_family(
            "ledger_concurrency_conflicts_total",
            "counter",
            "Optimistic-concurrency conflicts: retried (decided again) or gave_up (answered 503).",
            (
                f'ledger_concurrency_conflicts_total{{outcome="{outcome}"}} '
                f"{stats.conflicts.get(outcome, 0)}"
                for outcome in ("retried", "gave_up")
            ),
        ),
        *_family(
            "ledger_stripe_webhooks_total",
            "counter",
            "Stripe webhook deliveries, by outcome.",
            (
                f'ledger_stripe_webhooks_total{{outcome="{outcome}"}} {webhooks.get(outcome, 0)}'
                for outcome in WEBHOOK_OUTCOMES
            ),
        ),
        *_family(
            "ledger_group_commit_batches_total",
            "counter",
            "Transactions the group committer wrote (each carries one or more commands).",
            [f"ledger_group_commit_batches_total {group_commit.batches}"],
        ),
        *_family(
            "ledger_group_commit_commands_total",
            "counter",
            "Commands the group committer wrote.",
            [f"ledger_group_commit_commands_total {group_commit.commands}"],
        ),
        *_family(
            "ledger_store_head_position",
            "gauge",
            "Highest position in the event store.",
            [f"ledger_store_head_position {head}"],
        ),
        *_family(
            "ledger_projection_position",
            "gauge",
            "Position each view has applied up to.",
            (
                f'ledger_projection_position{{view="{_label(n)}"}} {v.position}'
                for n, v in sorted(views.items())
            ),
        ),
        *_family(
            "ledger_projection_lag_positions",
            "gauge",
            "How many positions each view is behind the store's head.",
            (
                f'ledger_projection_lag_positions{{view="{_label(n)}"}} {v.lag_events}'
                for n, v in sorted(views.items())
            ),
        ),
        *_family(
            "ledger_projection_lag_seconds",
            "gauge",
            "Age of the oldest event each view has not applied yet (0 when caught up).",
            (
                f'ledger_projection_lag_seconds{{view="{_label(n)}"}} {_number(round(v.lag_seconds, 3))}'
                for n, v in sorted(views.items())
            ),
        ),
        *_family(
            "ledger_db_pool_connections",
            "gauge",
            "Connections of this process's database pool, by state.",
            [
                f'ledger_db_pool_connections{{state="in_use"}} {pool_size - pool_idle}',
                f'ledger_db_pool_connections{{state="idle"}} {pool_idle}',
            ],
        ),
        *_family(
            "ledger_db_pool_max_connections",
            "gauge",
            "Most connections the pool may open.",
            [f"ledger_db_pool_max_connections {pool.get_max_size()}"],
        ),
        *_family(
            "ledger_process_start_time_seconds",
            "gauge",
            "When this process started (Unix time).",
            [f"ledger_process_start_time_seconds {int(STARTED)}"],
        ),
    ]
    return "\n".join(lines) + "\n"

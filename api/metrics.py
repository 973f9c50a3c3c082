"""Prometheus metrics through prometheus-client: its counters, histogram, gauges and exposition.

What each metric means is listed in docs/operations-metrics.md. On the request path
a request adds to a count, a sum and a bucket kept as plain numbers (``RequestMetrics``,
with ``ledger/store/stats.py``'s ``PlainCounter`` and ``PlainHistogram``), made into the
request counter and latency histogram when the page is collected; the gauges read from
the database and the pool are set only when ``/metrics`` is scraped.

Where ``/metrics`` may be read (its own port, a bearer token) is ``MetricsAccess``.

Several processes on one port (``PROMETHEUS_MULTIPROC_DIR``): prometheus-client then
keeps every counter and histogram in that folder's files (the request metrics too: its
own ``Counter`` and ``Histogram`` then, not plain numbers), and the page is put
together from all of them by ``MultiProcessCollector``. The gauges are set by the
process that answers the scrape, just before it answers (``mostrecent``), so they show
that process's view; the start time is the earliest of them (``min``).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ledger.clock_guard import ClockGuard
from ledger.store import stats
from ledger.store.event_store import DATABASE_ERRORS
from ledger.store.read_connections import ReadConnections
from ledger.store.stats import multiprocess_dir

if TYPE_CHECKING:  # Litestar's types alone: the command line counts view reads without it
    from litestar.connection import ASGIConnection
    from litestar.types import ASGIApp, Receive, Scope, Send

# The page keeps the names docs/operations-metrics.md lists: no ``_created`` series.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4"
"""The text format 0.0.4 (prometheus-client's ``generate_latest``), without its
``; charset=utf-8``: Litestar adds that to every ``text/`` type, and a header naming it
twice is no media type to Go's parser (Prometheus 3 refuses such a scrape)."""

STARTED = time.time()

REGISTRY = CollectorRegistry(auto_describe=True)
"""The HTTP edge's metrics; the page also shows ``ledger.store.stats.REGISTRY``."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request latency histogram's buckets; +Inf follows. From
1 ms: a balance read or a spend on an idle service answers in 1-5 ms (9 in 10 reads fell
in a first bucket of 5 ms, which left their median unknown)."""

_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
"""Methods counted by name; any other is counted as ``other`` (clients choose methods,
and every new label value would be a new series)."""

WEBHOOK_OUTCOMES = ("applied", "duplicate", "ignored", "bad_signature", "malformed")
"""Stripe deliveries: applied (new, acted on), duplicate (seen before: nothing done),
ignored (new, a type the ledger does not act on), bad_signature (400), malformed (verified,
but nothing the ledger can keep: 200, nothing recorded)."""

METRICS_PATH = "/metrics"


_REQUESTS = "ledger_http_requests"
_REQUESTS_HELP = "HTTP requests answered, by method and exact status."
_DURATION = "ledger_http_request_duration_seconds"
_DURATION_HELP = "Time to answer HTTP requests, by route template, method and status class."


def _status_class(status: int) -> str:
    return _STATUS_CLASSES[status // 100] if 0 <= status < 600 else "5xx"


class RequestMetrics:
    """The request counter and latency histogram (``stats.counter``, ``stats.histogram``:
    plain numbers in a process alone, prometheus-client's own in multiprocess mode, or as
    ``plain`` says), their children bound once per label set: made on first use, keyed by
    the request's labels; bounded as the labels are (methods a fixed set, statuses 100-599,
    routes the app's path templates)."""

    def __init__(self, registry: CollectorRegistry, *, plain: bool | None = None) -> None:
        self.counter = stats.counter(
            _REQUESTS, _REQUESTS_HELP, ("method", "status"), registry, plain=plain
        )
        self.histogram = stats.histogram(
            _DURATION,
            _DURATION_HELP,
            ("route", "method", "status"),
            LATENCY_BUCKETS,
            registry,
            plain=plain,
        )
        self._observed: dict[
            tuple[str, str, int], tuple[Counter | stats.Count, Histogram | stats.Timing]
        ] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        if method not in _METHODS:  # before the lookup: the keys stay bounded
            method = "other"
        children = self._observed.get((route, method, status))
        if children is None:
            children = self._observed[(route, method, status)] = (
                self.counter.labels(method, str(status)),
                self.histogram.labels(route, method, _status_class(status)),
            )
        counted, timed = children
        counted.inc()
        timed.observe(seconds)


observe_request: Callable[[str, str, int, float], None] = RequestMetrics(REGISTRY).observe
"""Record one answered request: ``observe_request(route, method, status, seconds)``."""

_stripe_webhooks = Counter(
    "ledger_stripe_webhooks",
    "Stripe webhook deliveries, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
webhook_outcomes = {
    outcome: _stripe_webhooks.labels(outcome=outcome) for outcome in WEBHOOK_OUTCOMES
}
"""Stripe deliveries by outcome (one of WEBHOOK_OUTCOMES): ``webhook_outcomes["applied"].inc()``."""

_view_reads = Counter(
    "ledger_view_reads",
    "View reads (balances, lists, feeds), by the database that answered them.",
    ["source"],
    registry=REGISTRY,
)
view_reads = {source: _view_reads.labels(source=source) for source in ("primary", "standby")}
"""View reads by source: ``view_reads["standby"].inc()`` (api/read_side.py)."""

store_head_position = Gauge(
    "ledger_store_head_position",
    "Highest position in the event store.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
projection_position = Gauge(
    "ledger_projection_position",
    "Position each view has applied up to.",
    ["view"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
projection_lag_positions = Gauge(
    "ledger_projection_lag_positions",
    "How many positions each view is behind the store's head.",
    ["view"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
projection_lag_seconds = Gauge(
    "ledger_projection_lag_seconds",
    "Age of the oldest event each view has not applied yet (0 when caught up).",
    ["view"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
db_pool_connections = Gauge(
    "ledger_db_pool_connections",
    "Connections of this process's database pool, by state.",
    ["state"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
db_pool_max_connections = Gauge(
    "ledger_db_pool_max_connections",
    "Most connections the pool may open.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
db_pool_read_connections = Gauge(
    "ledger_db_pool_read_connections",
    "Connections of this process's pool that reads hold (views, event lists, as-of replays).",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
db_pool_read_max_connections = Gauge(
    "ledger_db_pool_read_max_connections",
    "Most connections of the pool reads may hold at once; the rest are the commands'.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
database_up = Gauge(
    "ledger_database_up",
    "1 when the database answered this scrape's queries, 0 when it did not.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
webhook_deliveries_pending = Gauge(
    "ledger_webhook_deliveries_pending",
    "Outbound notifications still to be delivered (the outbox's pending deliveries).",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
webhook_oldest_pending_seconds = Gauge(
    "ledger_webhook_oldest_pending_seconds",
    "Age of the oldest outbound notification not yet delivered (0 when none waits).",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
webhook_deliveries_failed = Gauge(
    "ledger_webhook_deliveries_failed",
    "Outbound notifications to live endpoints whose retries ran out (status failed), until "
    "redelivered, pruned or their endpoint is disabled.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
expiry_overdue_seconds = Gauge(
    "ledger_expiry_overdue_seconds",
    "How long the open hold or active grant longest past its expiry has waited for the "
    "sweeper to record it (0 when none is).",
    ["kind"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
clock_offset_seconds = Gauge(
    "ledger_clock_offset_seconds",
    "How far this host's clock was ahead of the database's when last measured (negative: "
    "behind; ledger/clock_guard.py).",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
clock_skewed = Gauge(
    "ledger_clock_skewed",
    "1 while this host's clock is further from the database's than "
    "LEDGER_MAX_CLOCK_SKEW_SECONDS (its commands are refused, /readyz answers 503), else 0.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
process_start_time = Gauge(
    "ledger_process_start_time_seconds",
    "When this process started (Unix time).",
    registry=REGISTRY,
    multiprocess_mode="min",
)
process_start_time.set(int(STARTED))


def mark_process_started() -> None:
    """Set this process's start time to now: in a forked worker every value, this one
    too, starts again from 0 (prometheus-client's multiprocess files are per process)."""
    process_start_time.set(int(time.time()))


_pool_in_use = db_pool_connections.labels(state="in_use")
_pool_idle = db_pool_connections.labels(state="idle")


class MetricsAccess(msgspec.Struct, frozen=True):
    """Where ``/metrics`` answers: only on ``port`` when set, only with ``token`` when set."""

    port: int | None = None
    token: str | None = None

    def on_metrics_port(self, connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
        """Whether the request came in on the metrics port (False when there is none)."""
        server = connection.scope.get("server")
        return self.port is not None and server is not None and server[1] == self.port

    def serves_elsewhere(self, scope: Scope, path: str | None) -> bool:
        """Whether the port ``scope`` came in on answers no ``path`` (a route's template, or
        the path asked for when none matched): with a metrics port, that port answers
        ``/metrics`` alone and the API's port everything else. Such a request is 404 by any
        method, OPTIONS too, rather than told the path's methods."""
        if self.port is None or scope["type"] != "http":
            return False
        server = scope.get("server")
        on_metrics_port = server is not None and server[1] == self.port
        return on_metrics_port != (path == METRICS_PATH)

    def may_read(self, connection: ASGIConnection[Any, Any, Any, Any], token: str | None) -> bool:
        """Whether this request may read the page (its own port, and the token if one is set)."""
        if self.port is not None and not self.on_metrics_port(connection):
            return False
        if self.token is None:
            return True
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())


def metrics_port_only(access: MetricsAccess) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware: the metrics port answers ``/metrics`` and nothing else, and the API's port
    everything but ``/metrics`` (``MetricsAccess.serves_elsewhere``); the others are 404."""

    def wrap(app: ASGIApp) -> ASGIApp:
        if access.port is None:
            return app  # one port answers everything: no work a request (nor a frame)
        from litestar.exceptions import NotFoundException

        # Not a coroutine of its own: it hands back the app's (one frame fewer a request).
        def gated(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            if access.serves_elsewhere(scope, scope.get("path_template")):
                raise NotFoundException
            return app(scope, receive, send)

        return gated

    return wrap


_VIEW_LAG = """
    SELECT p.name, p.position,
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT e.recorded_at FROM stored_events e
               WHERE e.notification_id > p.position
               ORDER BY e.notification_id LIMIT 1)), 0)::float8 AS lag_seconds
    FROM projection_positions p"""


_BACKLOGS = """
    SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
           (SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e
                USING (endpoint_id)
            WHERE d.status = 'failed' AND e.disabled_at IS NULL) AS failed,
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT min(created_at) FROM webhook_deliveries
               WHERE status = 'pending')), 0)::float8 AS oldest_pending,
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT min(expires_at) FROM holds WHERE status = 'held')), 0)::float8 AS hold_overdue,
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT min(expires_at) FROM grants
               WHERE status = 'active' AND expires_at IS NOT NULL)), 0)::float8 AS grant_overdue"""

DATABASE_SECONDS = 2.0
"""Longest a scrape waits for the database: past it the page is answered without it."""


async def refresh_gauges(pool: asyncpg.Pool, reads: ReadConnections | None = None) -> None:
    """Set the gauges from the database (head, views, backlogs) and from this process's pool
    (and the reads' share of it, ``reads``).

    A database that does not answer sets ``ledger_database_up`` to 0 and leaves the other
    database gauges as they were: the page is still answered, so the counters of the
    requests it failed (503s) stay visible while it is away.

    The database is read with the reads' connections when there is a share (its views can
    be locked: scrapes waiting behind the lock, one a connection, held the commands' too),
    and not at all while every one of them is taken: the database gauges keep their last
    values, ``ledger_database_up`` too (the reads wait, not the database), and the share's
    gauges show it full."""
    if reads is not None and reads.full:
        _set_pool_gauges(pool, reads)
        return
    try:
        async with asyncio.timeout(DATABASE_SECONDS), (reads or pool).acquire() as connection:
            rows = await connection.fetch(_VIEW_LAG)
            head = int(
                await connection.fetchval(
                    "SELECT coalesce(max(notification_id), 0) FROM stored_events"
                )
            )
            backlogs = await connection.fetchrow(_BACKLOGS)
    except DATABASE_ERRORS:  # TimeoutError (and the pool's PoolBusy) are OSErrors
        database_up.set(0)
    else:
        database_up.set(1)
        _set_database_gauges(head, rows, backlogs)
    _set_pool_gauges(pool, reads)


def set_clock_gauges(guard: ClockGuard) -> None:
    """The clock's offset as last measured (left as it was while never measured)."""
    if guard.offset is not None:
        clock_offset_seconds.set(round(guard.offset, 3))
    clock_skewed.set(1 if guard.skewed else 0)


def _set_pool_gauges(pool: asyncpg.Pool, reads: ReadConnections | None) -> None:
    size, idle = pool.get_size(), pool.get_idle_size()
    _pool_in_use.set(size - idle)
    _pool_idle.set(idle)
    db_pool_max_connections.set(pool.get_max_size())
    if reads is not None:
        db_pool_read_connections.set(reads.in_use)
        db_pool_read_max_connections.set(reads.limit)


def _set_database_gauges(
    head: int, rows: list[asyncpg.Record], backlogs: asyncpg.Record | None
) -> None:
    store_head_position.set(head)
    for row in rows:
        view = row["name"]
        projection_position.labels(view).set(row["position"])
        projection_lag_positions.labels(view).set(max(head - row["position"], 0))
        projection_lag_seconds.labels(view).set(round(max(row["lag_seconds"], 0.0), 3))
    assert backlogs is not None  # one row of subqueries
    webhook_deliveries_pending.set(backlogs["pending"])
    webhook_oldest_pending_seconds.set(round(backlogs["oldest_pending"], 3))
    webhook_deliveries_failed.set(backlogs["failed"])
    for kind in ("hold", "grant"):
        # An expiry still in the future is no backlog (the difference is negative then).
        overdue = backlogs[f"{kind}_overdue"]
        expiry_overdue_seconds.labels(kind).set(round(max(overdue, 0.0), 3))


class _ThisProcess(Collector):
    """Every metric of this process: the HTTP edge's and the ledger's."""

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()
        yield from stats.REGISTRY.collect()


def exposition() -> bytes:
    """The page: this process's metrics, or every process's in multiprocess mode."""
    if multiprocess_dir() is None:
        return generate_latest(_ThisProcess())
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)

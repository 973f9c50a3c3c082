"""The request metrics kept as plain numbers read as prometheus-client's own would."""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from api.metrics import MetricsAccess, RequestMetrics, metrics_port_only

_ROUTES = ("/v1/accounts/{account_id}/spend", "/v1/credits", "unmatched")
_METHODS = ("GET", "HEAD", "POST", "DELETE", "BREW")  # BREW: counted as "other"
_STATUSES = (200, 201, 304, 404, 422, 499, 500, 503, 700)
_EDGES = (0.0, 0.001, 0.0025, 0.004999, 0.005, 0.01, 1.0, 9.99, 10.0, 10.5, 1e-9, 42.0)


def _library_page(observations: list[tuple[str, str, int, float]]) -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    library = RequestMetrics(registry, plain=False)
    counter, histogram = library.counter, library.histogram
    assert isinstance(counter, Counter)
    assert isinstance(histogram, Histogram)
    for route, method, status, seconds in observations:
        method = method if method != "BREW" else "other"
        status_class = (
            ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")[status // 100] if (status < 600) else "5xx"
        )
        counter.labels(method, str(status)).inc()
        histogram.labels(route, method, status_class).observe(seconds)
    return generate_latest(registry)


def _observed_page(observations: list[tuple[str, str, int, float]], *, plain: bool) -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    counts = RequestMetrics(registry, plain=plain)
    for observation in observations:
        counts.observe(*observation)
    return generate_latest(registry)


def _plain_page(observations: list[tuple[str, str, int, float]]) -> bytes:
    return _observed_page(observations, plain=True)


def _observations() -> list[tuple[str, str, int, float]]:
    chosen = random.Random(15)
    return [
        (
            chosen.choice(_ROUTES),
            chosen.choice(_METHODS),
            chosen.choice(_STATUSES),
            chosen.choice(_EDGES) if chosen.random() < 0.2 else chosen.expovariate(200.0),
        )
        for _ in range(5000)
    ]


def test_the_page_is_prometheus_clients_own_series_order_and_values() -> None:
    observations = _observations()
    plain = _plain_page(observations)
    assert plain == _library_page(observations)
    assert b'ledger_http_requests_total{method="other",status="404"}' in plain
    assert b'le="+Inf"' in plain
    assert b'status="5xx"' in plain


def test_an_empty_page_names_both_metrics() -> None:
    assert _plain_page([]) == _library_page([])
    assert b"# TYPE ledger_http_request_duration_seconds histogram" in _plain_page([])


def test_in_multiprocess_mode_requests_are_recorded_in_prometheus_clients_own_metrics() -> None:
    """The same ``observe`` binds the library's children there (PROMETHEUS_MULTIPROC_DIR
    keeps them in its files)."""
    observations = _observations()
    assert _observed_page(observations, plain=False) == _library_page(observations)


def test_without_a_metrics_port_the_port_gate_is_no_layer_of_a_request() -> None:
    """With one port answering every path, ``metrics_port_only`` has nothing to refuse: it
    hands back the app itself, and a spend pays nothing for it. It called
    ``MetricsAccess.serves_elsewhere`` on every request, to decide nothing."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    assert metrics_port_only(MetricsAccess(token="scrape-s3cret"))(app) is app
    assert metrics_port_only(MetricsAccess(port=9100))(app) is not app

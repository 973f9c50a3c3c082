"""Counters the write path bumps and ``/metrics`` shows: prometheus-client counters.

The write path runs thousands of times a second, so a count is one bound
child's ``inc()``: the children are bound once, per event topic the first time it
is seen, and in a process alone they are plain numbers (``PlainCounter``: an add,
no lock), made into the page's counters when it is collected. ``api/metrics.py``
exposes ``REGISTRY``, and keeps its request counter and latency histogram the same
way (``counter``, ``histogram``); ``ledger/`` never imports ``api/``. With
``PROMETHEUS_MULTIPROC_DIR`` set these counters are prometheus-client's own, in that
folder's files, and add up over every process of a host (see
docs/operations-metrics.md).
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ledger.store.mapper import event_type_name

REGISTRY = CollectorRegistry(auto_describe=True)
"""The ledger's own metrics (the HTTP edge keeps its own, in ``api/metrics.py``)."""


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR``, when several processes share the metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Count:
    """One counter's value in a process alone: a plain float ``inc()`` adds to."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        # 1.0, not 1: a float plus a float is the interpreter's quick path (~170
        # instructions less an inc than a float plus an int; the page is the same).
        self.value += amount


class PlainCounter(Collector):
    """A counter kept as plain numbers, read as prometheus-client's ``Counter`` of the same
    name, help and labels reads (the same series in the same order, the same additions).
    The library's ``inc()`` (checks, a lock) cost a spend ~11k of its ~890k instructions
    in process for the three counts a command makes (``bench.spend_instructions``). Only
    the event loop's thread counts."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Count] = {}
        if not self._labelnames:
            self._children[()] = Count()

    def labels(self, *values: str, **named: str) -> Count:
        key = values or tuple(named[label] for label in self._labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = Count()
        return child

    def inc(self, amount: float = 1) -> None:
        self._children[()].value += amount

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, child in list(self._children.items()):
            family.add_metric(labels, child.value)
        yield family


class Timing:
    """One histogram's child in a process alone: the sum and a count a bucket that
    ``observe()`` adds to."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.sum = 0.0
        self.buckets = [0] * len(bounds)

    def observe(self, amount: float) -> None:
        self.sum += amount
        # The first bucket whose bound is >= amount (Histogram.observe's ``<=``); +Inf last.
        self.buckets[bisect_left(self.bounds, amount)] += 1


class PlainHistogram(Collector):
    """A histogram with labels kept as plain numbers, read as prometheus-client's
    ``Histogram`` of the same name, help, labels and buckets reads (the same series in the
    same order, the same float additions). The library's ``observe()`` (checks, a lock for
    each value, a loop over the buckets) and the request counter's ``inc()`` cost a spend
    ~12k of its ~905k instructions in process (``api/metrics.py``'s request metrics,
    ``bench.spend_instructions``). Only the event loop's thread observes."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        bounds = [float(bound) for bound in buckets]
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = tuple(bounds)
        self._bucket_names = tuple(floatToGoString(bound) for bound in bounds)
        self._children: dict[tuple[str, ...], Timing] = {}

    def labels(self, *values: str, **named: str) -> Timing:
        key = values or tuple(named[label] for label in self._labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = Timing(self._bounds)
        return child

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, child in list(self._children.items()):
            buckets = []
            so_far = 0.0
            for name, count in zip(self._bucket_names, child.buckets, strict=True):
                so_far += count
                buckets.append((name, so_far))
            family.add_metric(labels, buckets, child.sum)
        yield family


def counter(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    registry: CollectorRegistry = REGISTRY,
    *,
    plain: bool | None = None,
) -> Counter | PlainCounter:
    """A counter on ``registry``: prometheus-client's own with ``PROMETHEUS_MULTIPROC_DIR``
    (its files are what the page adds up over the processes), else a ``PlainCounter``;
    ``plain`` chooses instead (tests compare the two)."""
    if not _plain(plain):
        return Counter(name, documentation, labelnames, registry=registry)
    kept = PlainCounter(name, documentation, labelnames)
    registry.register(kept)
    return kept


def histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    buckets: Sequence[float],
    registry: CollectorRegistry = REGISTRY,
    *,
    plain: bool | None = None,
) -> Histogram | PlainHistogram:
    """A histogram with labels on ``registry``, chosen as ``counter`` chooses."""
    if not _plain(plain):
        return Histogram(name, documentation, labelnames, buckets=buckets, registry=registry)
    kept = PlainHistogram(name, documentation, labelnames, buckets)
    registry.register(kept)
    return kept


def _plain(plain: bool | None) -> bool:
    return multiprocess_dir() is None if plain is None else plain


events_appended = counter(
    "ledger_events_appended",
    "Events this process appended to the store, by event type.",
    ["type"],
)
"""Counted when the commit returns, by type name (``CreditsSpent``), never by topic."""

_appended_by_topic: dict[str, Counter | Count] = {}


def count_appended(topic: str) -> None:
    """One event of ``topic`` was committed."""
    child = _appended_by_topic.get(topic)
    if child is None:
        child = _appended_by_topic[topic] = events_appended.labels(type=event_type_name(topic))
    child.inc()


CONFLICT_OUTCOMES = ("retried", "gave_up")

_concurrency_conflicts = counter(
    "ledger_concurrency_conflicts",
    "Optimistic-concurrency conflicts: retried (decided again) or gave_up (answered 503).",
    ["outcome"],
)
conflicts = {
    outcome: _concurrency_conflicts.labels(outcome=outcome) for outcome in CONFLICT_OUTCOMES
}
"""Conflicts met by the unit of work: ``retried`` (decided again on fresh state) or
``gave_up`` (still conflicting after the last attempt: 503)."""

group_commit_batches = counter(
    "ledger_group_commit_batches",
    "Transactions the group committer wrote (each carries one or more commands).",
)
group_commit_commands = counter(
    "ledger_group_commit_commands",
    "Commands the group committer wrote.",
)

"""Counters the write path bumps and ``/metrics`` shows: prometheus-client counters.

The write path runs thousands of times a second, so a count is one bound
child's ``inc()``: the children are bound once, per event topic the first time it
is seen, and in a process alone they are plain numbers (``PlainCounter``: an add,
no lock), made into the page's counters when it is collected. ``api/metrics.py``
exposes ``REGISTRY``; ``ledger/`` never imports ``api/``. With
``PROMETHEUS_MULTIPROC_DIR`` set these counters are prometheus-client's own, in that
folder's files, and add up over every process of a host (see
docs/operations-metrics.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

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

    def inc(self, amount: float = 1) -> None:
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


def counter(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    registry: CollectorRegistry = REGISTRY,
) -> Counter | PlainCounter:
    """A counter on ``registry``: prometheus-client's own with ``PROMETHEUS_MULTIPROC_DIR``
    (its files are what the page adds up over the processes), else a ``PlainCounter``."""
    if multiprocess_dir() is not None:
        return Counter(name, documentation, labelnames, registry=registry)
    plain = PlainCounter(name, documentation, labelnames)
    registry.register(plain)
    return plain


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

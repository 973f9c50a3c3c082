"""Counters the write path bumps and ``/metrics`` shows: prometheus-client counters.

The write path runs thousands of times a second, so a count is one bound
child's ``inc()`` (a lock and an add): the children are bound once, per event
topic the first time it is seen. ``api/metrics.py`` exposes ``REGISTRY``;
``ledger/`` never imports ``api/``. With ``PROMETHEUS_MULTIPROC_DIR`` set these
counters live in that folder's files and add up over every process of a host
(see docs/operations-metrics.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from ledger.store.mapper import event_type_name

REGISTRY = CollectorRegistry(auto_describe=True)
"""The ledger's own metrics (the HTTP edge keeps its own, in ``api/metrics.py``)."""

events_appended = Counter(
    "ledger_events_appended",
    "Events this process appended to the store, by event type.",
    ["type"],
    registry=REGISTRY,
)
"""Counted when the commit returns, by type name (``CreditsSpent``), never by topic."""

_appended_by_topic: dict[str, Counter] = {}


def count_appended(topic: str) -> None:
    """One event of ``topic`` was committed."""
    child = _appended_by_topic.get(topic)
    if child is None:
        child = _appended_by_topic[topic] = events_appended.labels(type=event_type_name(topic))
    child.inc()


CONFLICT_OUTCOMES = ("retried", "gave_up")

_concurrency_conflicts = Counter(
    "ledger_concurrency_conflicts",
    "Optimistic-concurrency conflicts: retried (decided again) or gave_up (answered 503).",
    ["outcome"],
    registry=REGISTRY,
)
conflicts = {
    outcome: _concurrency_conflicts.labels(outcome=outcome) for outcome in CONFLICT_OUTCOMES
}
"""Conflicts met by the unit of work: ``retried`` (decided again on fresh state) or
``gave_up`` (still conflicting after the last attempt: 503)."""

group_commit_batches = Counter(
    "ledger_group_commit_batches",
    "Transactions the group committer wrote (each carries one or more commands).",
    registry=REGISTRY,
)
group_commit_commands = Counter(
    "ledger_group_commit_commands",
    "Commands the group committer wrote.",
    registry=REGISTRY,
)

"""The ledger's counters kept as plain numbers read as prometheus-client's own would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, generate_latest

from ledger.store.stats import PlainCounter

_TYPES = ("CreditsSpent", "HoldPlaced", "AccountOpened")


def _pages(amounts: list[tuple[str, float]]) -> tuple[bytes, bytes]:
    """The page of prometheus-client's counters and of plain ones after the same counts."""
    library, plain = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    counted = (
        Counter("ledger_events_appended", "Events.", ["type"], registry=library),
        Counter("ledger_group_commit_commands", "Commands.", registry=library),
    )
    kept = (
        PlainCounter("ledger_events_appended", "Events.", ["type"]),
        PlainCounter("ledger_group_commit_commands", "Commands."),
    )
    for counter in kept:
        plain.register(counter)
    for kind, amount in amounts:
        counted[0].labels(type=kind).inc()
        kept[0].labels(type=kind).inc()
        counted[1].inc(amount)
        kept[1].inc(amount)
    return generate_latest(library), generate_latest(plain)


def test_the_page_is_prometheus_clients_own() -> None:
    chosen = random.Random(15)
    amounts = [(chosen.choice(_TYPES), chosen.choice((1, 2, 48, 0.5))) for _ in range(3000)]
    library, plain = _pages(amounts)
    assert plain == library
    assert b'ledger_events_appended_total{type="HoldPlaced"}' in plain


def test_before_any_count() -> None:
    library, plain = _pages([])
    assert plain == library
    assert b"ledger_group_commit_commands_total 0.0" in plain

"""How the audit applies an event without the library's general path: per event class the
aggregate method its registry calls, per topic the bytes the hash chain hashes and the
fast decoder (both learned once, kept in plain dicts).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import CanMutateAggregate

from ledger.domain.account import CreditAccount
from ledger.domain.account import on as account_evolution
from ledger.domain.checkout import CheckoutSession
from ledger.domain.checkout import on as checkout_evolution
from ledger.domain.events import AccountEvent, CheckoutEvent
from ledger.domain.payment_intent import PaymentIntent
from ledger.domain.payment_intent import on as payment_intent_evolution
from ledger.store.hash_chain import length_prefixed
from ledger.store.mapper import fast_shape

_Applier = tuple[Any, Any]
APPLIERS: dict[type, _Applier] = {}
"""Per event class, (aggregate class, method) where an event of it changes an aggregate of
exactly that class by that method alone (``applier_of``), else (None, None): a plain dict, read
with ``get``."""


_REGISTRIES = (
    (CreditAccount, account_evolution),
    (CheckoutSession, checkout_evolution),
    (PaymentIntent, payment_intent_evolution),
)


def applier_of(kind: type) -> _Applier:
    """``APPLIERS``' entry of an event class not met before, kept: for an event whose
    ``mutate`` is the library's and whose ``apply`` only hands it to its aggregate's
    ``evolve``, where that ``evolve`` is its registry's own (``Evolution.evolve``, which
    calls the method registered for the event's class and does nothing else), that method
    and the aggregate class it is registered for."""
    applier: _Applier = (None, None)
    if (
        getattr(kind, "mutate", None) is CanMutateAggregate.mutate
        and getattr(kind, "apply", None) is AccountEvent.apply
    ):
        for aggregate_class, registry in _REGISTRIES:
            method = registry.method(kind)
            if method is not None and aggregate_class.evolve is registry.evolve:
                applier = (aggregate_class, method)
                break
    APPLIERS[kind] = applier
    return applier


assert CheckoutEvent.apply is AccountEvent.apply  # one function, which evolve() alone follows

_Decoding = tuple[Any, int, int, tuple[tuple[str, Any], ...], type, Any]
"""A ``FastShape`` as a plain tuple: CPython 3.11 unpacks a tuple subclass through an
iterator (~500 instructions an event more)."""
_Topic = tuple[bytes, _Decoding | None, Any, Any]
TOPICS: dict[str, _Topic] = {}
"""Each topic (a store has a few dozen) as the hash chain hashes it, its fast decoder's parts
(``ledger.store.mapper.fast_shape``) and the ``APPLIERS`` entry of the class that decoder makes (an
event it decodes is of exactly that class: one lookup an event fewer, ~340 instructions of
~53,000, bench.verify_instructions; an event the general path decodes is looked up by its
class): a plain dict, read with ``get``, one lookup an event (a dict subclass with
``__missing__`` is not specialised by CPython 3.11: ~200 instructions more a lookup, and a
``functools.cache`` wrapper ~550)."""


def topic_of(topic: str) -> _Topic:
    """``TOPICS``' entry of a topic not met before, kept. A topic that names no class has
    no fast decoder (nor an applier): the general path raises for it, and the event is
    unreadable."""
    try:
        shape = fast_shape(topic)
    except Exception:  # the general path raises it again: a finding
        shape = None
    owner, method = applier_of(shape.cls) if shape is not None else (None, None)
    decoding: _Decoding | None = None
    if shape is not None:
        decoding = (
            shape.decode,
            shape.current,
            shape.every,
            shape.defaults,
            shape.cls,
            shape.set_dict,
        )
    TOPICS[topic] = made = (length_prefixed(topic), decoding, owner, method)
    return made

"""A stored snapshot held to the aggregate its events make at its version."""

from __future__ import annotations

from typing import Any

import msgspec

from ledger.domain.account import CreditAccount
from ledger.domain.holds import kept_among, repayable_by

_NOT_COMPARED = frozenset({"_pending_events"})
"""An aggregate's attributes a snapshot does not keep."""


def excuse_less_repayable(loaded: CreditAccount, replayed: Any) -> None:
    """An account's snapshot may keep less than the replay of what the carried allowance
    shares may repay: one taken before snapshots kept that figure in parts loads with none
    (``CreditAccount.upcast_v6_v7``), and so does every later snapshot of an account loaded
    from it, never more for the share of a hold placed in any period (``repayable_by``:
    what it may repay only grows with what it started from). Its holds then repay less than
    the rule allows, as the audit accepts of a settlement; only more than the events give
    is reported."""
    kept, made = loaded.carried_repayable, getattr(replayed, "carried_repayable", ())
    if kept == made:
        return
    origins = {part.origin for part in (*kept, *made)}
    if all(repayable_by(kept, origin) <= repayable_by(made, origin) for origin in origins):
        loaded.carried_repayable = made


def excuse_kept_for_later_topups(loaded: CreditAccount, replayed: Any) -> None:
    """An account's snapshot may have what resets kept for held top-ups stand for later ones
    than the replay (``kept_parts``): one taken before snapshots kept which loads it for the
    last of them (``CreditAccount.upcast_v7_v8``), and so does every later snapshot of an
    account loaded from it, never for earlier ones (each change moves the parts alike). Its
    captures then spend less of it than the rule, the rest from top-ups, as the audit accepts
    of a settlement (``audit.stream_replay._spending_less_kept``); only kept for earlier top-ups than the events
    give, which a capture would spend sooner, is reported."""
    kept, made = loaded.kept_parts, getattr(replayed, "kept_parts", ())
    if kept == made:
        return
    bounds = {end for part in (*kept, *made) for end in (part.ahead, part.ahead + part.amount)}
    if all(kept_among(kept, first) <= kept_among(made, first) for first in bounds):
        loaded.kept_parts = made


_ABSENT = object()


def differences(snapshot: Any, replayed: Any) -> list[str]:
    """How an aggregate loaded from a snapshot differs from the replayed one, field by field."""
    if type(snapshot) is not type(replayed):
        return [f"is a {type(snapshot).__name__}, the events make a {type(replayed).__name__}"]
    kept, made = vars(snapshot), vars(replayed)
    return [
        f"has {name} {_shown(kept.get(name, _ABSENT))}, the events make "
        f"{_shown(made.get(name, _ABSENT))}"
        for name in sorted((kept.keys() | made.keys()) - _NOT_COMPARED)
        if kept.get(name, _ABSENT) != made.get(name, _ABSENT)
    ]


def _shown(value: object) -> str:
    return "nothing" if value is _ABSENT else repr(value)


class _Versioned(msgspec.Struct):
    class_version: int = 1


_versioned = msgspec.json.Decoder(_Versioned).decode


def stored_version(state: bytes) -> int:
    """The class version an event was stored at (the mapper writes it past version 1)."""
    return _versioned(state).class_version

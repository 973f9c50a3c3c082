"""Auditor routes (scope ``ledger:audit``; customers may read their own account's events)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Router, get
from litestar.params import FromPath, QueryParameter

from api.access.guards import allow, own_account_or
from api.access.tokens import Scope
from api.dependencies import ServicesDependency
from api.openapi import BEARER, VIEW_READ_HEADERS, errors
from api.pagination import After, Limit, page
from api.read_side import Source
from api.schemas import AccountCredits
from api.services import Services
from api.validation import ValidationFailed, moment_as_read
from ledger.domain.account import kept_as_written
from ledger.domain.errors import AccountNotFound
from ledger.handlers.expiries import expire_due
from ledger.store.event_store import EventStore, RecordedEvent
from ledger.store.mapper import event_type_name, stored_object


class AuditedEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """An event as auditors read it: the stored JSON and the hash that seals it.

    ``stream`` names the stream by what it is about (``account/acct_42``,
    ``checkout/cs_...``, ``payment-intent/pi_...``); ``stream_id`` is its id.
    A stored state that is not a JSON object (a row written by hand) has ``data`` null and
    ``unreadable`` saying why, in one line; ``ledger audit verify`` reports it too.
    """

    position: int
    stream: str
    stream_id: str
    version: int
    type: str
    recorded_at: datetime
    data: dict[str, Any] | None
    hash: str
    unreadable: str | None = None


class EventPage(msgspec.Struct, frozen=True):
    """Oldest first; pass ``next_after`` as ``after`` for the next page (null: none yet)."""

    data: list[AuditedEvent]
    has_more: bool
    next_after: int | None


class CreditsAsOf(AccountCredits, frozen=True):
    """The balance as it stood at ``as_of``, replayed from the events."""

    as_of: datetime
    version: int


_decode: Callable[[bytes], Any] = msgspec.json.Decoder().decode
"""Reads the stored JSON whole (its strings' UTF-8, its numbers' range), where the relay
checks only its shape."""

# What each kind of stream is called after: its first event's type, and the field naming it.
_STREAM_NAMES = {
    "AccountOpened": ("account", "account_id"),
    "CheckoutRequested": ("checkout", "session_id"),
    "PaymentIntentRecorded": ("payment-intent", "payment_intent"),
}


async def _page_of(store: EventStore, events: list[RecordedEvent], limit: int) -> EventPage:
    shown = events[:limit]
    names = await _stream_names(store, {e.originator_id for e in shown})
    data = []
    for e in shown:
        stored, unreadable = stored_object(e.state, _decode)
        data.append(
            AuditedEvent(
                position=e.notification_id,
                stream=names.get(e.originator_id, str(e.originator_id)),
                stream_id=str(e.originator_id),
                version=e.originator_version,
                type=event_type_name(e.topic),
                recorded_at=e.recorded_at,
                data=stored,
                hash=e.hash.hex(),
                unreadable=unreadable,
            )
        )
    more = len(events) > limit
    return EventPage(data=data, has_more=more, next_after=data[-1].position if more else None)


async def _stream_names(store: EventStore, stream_ids: set[UUID]) -> dict[UUID, str]:
    names = {}
    for created in await store.first_events(stream_ids):
        kind, field = _STREAM_NAMES.get(event_type_name(created.topic), ("stream", ""))
        stored, _ = stored_object(created.state, _decode)
        name = stored.get(field) if stored is not None and field else None
        if stored is None:  # its first event unreadable: the stream goes by its id
            kind = "stream"
        names[created.originator_id] = f"{kind}/{name or created.originator_id}"
    return names


@get(
    "/v1/accounts/{account_id:str}/events",
    response_headers=VIEW_READ_HEADERS,
    guards=[own_account_or(Scope.LEDGER_AUDIT)],
    responses=errors(401, 403, 404, 422, 503),
)
async def account_events(
    account_id: FromPath[str],
    services: ServicesDependency,
    limit: Limit = None,
    after: After = None,
) -> EventPage:
    """The account's events and its Checkout sessions', in commit order, by position."""
    chosen = page(limit, after)

    async def read(source: Source) -> EventPage:
        events = await source.store.account_page(
            account_id, after=chosen.after or 0, limit=chosen.limit + 1
        )
        return await _page_of(source.store, events, chosen.limit)

    answer = await services.reads.run(read, of_store=True)
    # An empty page of an account that is not there (a mistyped id) is 404, as its credits
    # and its grants' pages answer, not an empty history: on its first page, and on a page
    # after a cursor too (a tailer resuming), which asks only when the page is empty.
    if not answer.data and not await services.ledger.account_exists(account_id):
        raise AccountNotFound
    return answer


@get(
    "/v1/events",
    response_headers=VIEW_READ_HEADERS,
    guards=[allow(Scope.LEDGER_AUDIT)],
    responses=errors(401, 403, 422, 503),
)
async def global_events(
    services: ServicesDependency, limit: Limit = None, after: After = None
) -> EventPage:
    """Every event in commit order; gap-free for readers who follow ``next_after``."""
    chosen = page(limit, after)

    async def read(source: Source) -> EventPage:
        events = await source.store.read_all(after=chosen.after or 0, limit=chosen.limit + 1)
        return await _page_of(source.store, events, chosen.limit)

    return await services.reads.run(read, of_store=True)


AsOf = Annotated[
    str | None,
    QueryParameter(
        name="as_of",
        description="RFC 3339 time with an offset: the balance as it stood then",
        # Documentation only: parse_as_of() checks it, with the 422 wording.
        schema_extra={
            "one_of": None,
            "type": "string",
            "format": "date-time",
            "examples": ["2026-11-25T12:00:00Z"],
        },
    ),
]


_PLUS_READ_AS_A_SPACE = re.compile(r"(?<=\d) (?=\d\d:?\d\d$)")
"""A positive offset's "+" written unencoded in a URL, which the query string reads as a
space: "?as_of=2026-11-25T12:00:00+01:00" (curl, a browser's address bar) was a 422. Also
"+0100", without the colon RFC 3339 writes: the same instant, as Python's ``%z`` and ISO
8601's basic form write it, which msgspec (every time in a body) takes."""


AS_OF_OUT_OF_RANGE = (
    "The as of must be later than 0001-01-01T00:00:00Z and earlier than "
    "9999-12-31T23:59:59.999999Z."
)
"""The moments ``kept_as_written`` takes: a time outside them (``0001-01-01T00:00:00Z``) is
one, and was answered as if it were not ("must be an RFC 3339 time")."""


def parse_as_of(value: str) -> datetime:
    """An RFC 3339 time with its offset, or a 422."""
    # RFC 3339 as bodies read it: datetime.fromisoformat also took ISO 8601's week dates,
    # "+00:60" and offsets with seconds (replayed at one instant, echoed as another).
    # Digits past the microsecond are cut, as in every time the API reads: msgspec rounds
    # them, and a moment rounded up counts an event recorded after it.
    value = _PLUS_READ_AS_A_SPACE.sub("+", value, count=1)
    try:
        moment = msgspec.convert(moment_as_read(value), datetime)
    except msgspec.ValidationError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed.single(
            "as_of", "The as of must be an RFC 3339 time with an offset, e.g. 2026-11-25T12:00:00Z."
        )
    if not kept_as_written(moment):
        raise ValidationFailed.single("as_of", AS_OF_OUT_OF_RANGE)
    return moment


async def credits_as_of(services: Services, account_id: str, as_of: str) -> CreditsAsOf:
    """Replay the account's events recorded up to ``as_of``."""
    moment = parse_as_of(as_of)
    if moment > datetime.now(UTC):
        raise ValidationFailed.single(
            "as_of", "The as of must not be in the future: its answer could still change."
        )
    account = await services.ledger.account_as_of(account_id, moment)
    version = account.version
    # As a spend at that moment would have found it: holds and grants past their expiry
    # then had expired, whether or not their expiry was recorded by then (on this copy).
    expire_due(account, moment)
    base = msgspec.structs.asdict(AccountCredits.of(account))
    return CreditsAsOf(**base, as_of=moment, version=version)


AUDITORS = Router(
    "/", route_handlers=[account_events, global_events], security=BEARER, tags=["auditors"]
)

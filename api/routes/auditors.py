"""Auditor routes (scope ``ledger:audit``; customers may read their own account's events)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.params import FromPath, QueryParameter

from api.access.guards import Caller, require_account_access, require_scope
from api.access.tokens import Scope
from api.openapi import BEARER, documented, errors
from api.pagination import After, Limit, page
from api.schemas import AccountCredits
from api.services import ServicesDependency
from api.validation import ValidationFailed
from ledger.store.event_store import RecordedEvent
from ledger.store.mapper import event_type_name


class AuditedEvent(msgspec.Struct, frozen=True):
    """An event as auditors read it: the stored JSON and the hash that seals it."""

    position: int
    stream_id: str
    version: int
    type: str
    recorded_at: datetime
    data: dict[str, Any]
    hash: str

    @classmethod
    def of(cls, recorded: RecordedEvent) -> AuditedEvent:
        return cls(
            position=recorded.notification_id,
            stream_id=str(recorded.originator_id),
            version=recorded.originator_version,
            type=event_type_name(recorded.topic),
            recorded_at=recorded.recorded_at,
            data=msgspec.json.decode(recorded.state),
            hash=recorded.hash.hex(),
        )


class EventPage(msgspec.Struct, frozen=True):
    """Oldest first; pass ``next_after`` as ``after`` for the next page (null: none yet)."""

    data: list[AuditedEvent]
    next_after: int | None


class CreditsAsOf(AccountCredits, frozen=True):
    """The balance as it stood at ``as_of``, replayed from the events."""

    as_of: datetime
    version: int


EVENT_PAGE_EXAMPLE = {
    "data": [
        {
            "position": 1,
            "stream_id": "5f0c7c52-8a47-5a3c-9d52-3c1e4b9c2a10",
            "version": 1,
            "type": "AccountOpened",
            "recorded_at": "2026-11-25T12:00:00.000000Z",
            "data": {"account_id": "acct_42", "monthly_allowance": 1000},
            "hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        }
    ],
    "next_after": None,
}


def _page_of(events: list[RecordedEvent], limit: int) -> EventPage:
    data = [AuditedEvent.of(e) for e in events]
    return EventPage(data=data, next_after=data[-1].position if len(data) == limit else None)


@get(
    "/v1/accounts/{account_id:str}/events",
    tags=["auditors"],
    security=BEARER,
    responses=errors(401, 403, 422, 503),
    operation_class=documented(answer=EVENT_PAGE_EXAMPLE),
)
async def account_events(
    account_id: FromPath[str],
    principal: Caller,
    services: ServicesDependency,
    limit: Limit = None,
    after: After = None,
) -> EventPage:
    """The account's events, oldest first, keyset-paginated by position."""
    require_account_access(principal, account_id, Scope.LEDGER_AUDIT)
    chosen = page(limit, after)
    events = await services.store.account_page(
        account_id, after=chosen.after or 0, limit=chosen.limit
    )
    return _page_of(events, chosen.limit)


@get(
    "/v1/events",
    tags=["auditors"],
    security=BEARER,
    responses=errors(401, 403, 422, 503),
    operation_class=documented(answer=EVENT_PAGE_EXAMPLE),
)
async def global_events(
    principal: Caller, services: ServicesDependency, limit: Limit = None, after: After = None
) -> EventPage:
    """Every event in commit order; gap-free for readers who follow ``next_after``."""
    require_scope(principal, Scope.LEDGER_AUDIT)
    chosen = page(limit, after)
    events = await services.store.read_all(after=chosen.after or 0, limit=chosen.limit)
    return _page_of(events, chosen.limit)


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


def parse_as_of(value: str) -> datetime:
    """An RFC 3339 time with its offset, or a 422."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed.single(
            "as_of", "The as of must be an RFC 3339 time with an offset, e.g. 2026-11-25T12:00:00Z."
        )
    return moment


async def credits_as_of(services: Any, account_id: str, as_of: str) -> CreditsAsOf:
    """Replay the account's events recorded up to ``as_of``."""
    moment = parse_as_of(as_of)
    if moment > datetime.now(UTC):
        raise ValidationFailed.single(
            "as_of", "The as of must not be in the future: its answer could still change."
        )
    account = await services.ledger.account_as_of(account_id, moment)
    base = msgspec.structs.asdict(AccountCredits.of(account))
    return CreditsAsOf(**base, as_of=moment, version=account.version)


ROUTES = [account_events, global_events]

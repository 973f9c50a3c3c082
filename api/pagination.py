"""``limit`` and ``after`` on list endpoints: default 100, at most 1,000."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Protocol, TypeVar

import msgspec
from litestar.params import QueryParameter

from api.validation import ValidationFailed
from ledger.text import is_whole_number, unsigned_number

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_POSITION = 2**63 - 1
"""Positions are PostgreSQL bigints: a larger cursor names no page."""

# The schemas document the wire format; page() checks it, with the 422 wording.
Limit = Annotated[
    str | None,
    QueryParameter(
        name="limit",
        description="1 to 1000, default 100",
        schema_extra={"one_of": None, "type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    ),
]
After = Annotated[
    str | None,
    QueryParameter(
        name="after",
        description="cursor from the last page",
        schema_extra={
            "one_of": None,
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_POSITION,
        },
    ),
]


class Page(msgspec.Struct, frozen=True):
    """A checked page request."""

    limit: int
    after: int | None


def page(limit: str | None, after: str | None) -> Page:
    """Check the query parameters, answering the contract's 422 when they are off."""
    errors: dict[str, list[str]] = {}
    chosen = DEFAULT_LIMIT
    if limit is not None:
        if not is_whole_number(limit):  # -1 is an integer, out of range
            errors["limit"] = ["The limit field must be an integer."]
        elif (number := unsigned_number(limit, 9)) is None or not 1 <= number <= MAX_LIMIT:
            errors["limit"] = [f"The limit must be between 1 and {MAX_LIMIT}."]
        else:
            chosen = number
    cursor = None
    if after is not None:
        # No page gives a cursor with a minus: "-0" is no position either (it read as 0).
        position = unsigned_number(after, 19)
        if position is None or position > MAX_POSITION:
            errors["after"] = ["The after field must be a position from an earlier page."]
        else:
            cursor = position
    if errors:
        raise ValidationFailed(errors)
    return Page(limit=chosen, after=cursor)


class _Positioned(Protocol):
    @property
    def position(self) -> int: ...


Row = TypeVar("Row", bound=_Positioned)
Answer = TypeVar("Answer")


def page_of_rows(kind: Callable[..., Answer], rows: list[Row], limit: int) -> Answer:
    """``kind``'s page (``data``, ``has_more``, ``next_after``) of the first ``limit`` of
    ``rows``, which were read one longer to tell whether another page follows."""
    shown = rows[:limit]
    more = len(rows) > limit
    return kind(data=shown, has_more=more, next_after=shown[-1].position if more else None)

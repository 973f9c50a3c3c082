"""An account's grants as they stand now, for the grants list and ``ledger grants list``."""

from __future__ import annotations

from collections.abc import Awaitable

import msgspec

from api.services import Services
from ledger.domain.ids import account_stream_id
from projections.queries import GrantLine, Views


async def grants_now(
    services: Services,
    account_id: str,
    status: str,
    *,
    limit: int,
    before: int | None = None,
    at_least: int | None = None,
) -> list[GrantLine]:
    """The account's grants from the grants view, each as it stands now: one past its expiry
    is expired, with what its expiry leaves of it (what open holds reserve), before the
    sweeper records it so (spends no longer use it; it was listed active, all of it
    remaining, for as long as the sweeper or the projector was stopped).

    ``at_least``: read as the API's reads are (api/read_side.py: the standby or the
    primary, once its views have applied that position or a second has passed); None
    reads the primary's views as they stand (the command line)."""
    stream_id, now = account_stream_id(account_id), services.ledger.clock()

    def read(views: Views) -> Awaitable[list[GrantLine]]:
        return views.grants(stream_id, status, limit=limit, before=before, now=now)

    if at_least is None:
        rows = await read(services.views)
    else:
        rows = await services.reads.run(lambda source: read(source.views), at_least=at_least)
    if not any(_unrecorded_expiry(row) for row in rows):
        return rows
    account = await services.ledger.account_now(account_id)  # with those expiries
    return [
        msgspec.structs.replace(
            row,
            remaining=left.remaining if (left := account.grants.get(row.grant_id)) else 0,
            closed_at=row.expires_at,
        )
        if _unrecorded_expiry(row)
        else row
        for row in rows
    ]


def _unrecorded_expiry(row: GrantLine) -> bool:
    return row.status == "expired" and row.closed_at is None

"""Grant routes: promotional or contractual credits given by internal services (``ledger:write``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, get, post
from litestar.params import Body as Documented
from litestar.params import FromPath, QueryParameter

from api.access.guards import allow
from api.access.tokens import Scope
from api.dependencies import ServicesDependency
from api.grant_reads import grants_now
from api.openapi import (
    BEARER,
    COMMAND_HEADERS,
    VIEW_READ_HEADERS,
    errors,
    example,
    write_errors,
)
from api.pagination import After, Limit, page, page_of_rows
from api.schemas import GrantRequest, VoidGrantRequest
from api.validation import (
    Body,
    IdempotencyKey,
    OptionalBody,
    OptionalIdempotencyKey,
    ValidationFailed,
)
from ledger.commands import GrantCredits, VoidGrant
from ledger.domain.ids import account_stream_id
from ledger.domain.limits import DEFAULT_PRIORITY
from ledger.handlers.grants import GrantAnswer, GrantClosedAnswer
from projections.names import GRANT_STATUSES
from projections.queries import GrantLine

Status = Annotated[
    str | None,
    QueryParameter(
        name="status",
        description="active, expired, voided or all (the default)",
        schema_extra={"one_of": None, "type": "string", "enum": list(GRANT_STATUSES)},
    ),
]


class Grants(msgspec.Struct, frozen=True):
    """A page of an account's grants, newest first; pass ``next_after`` as ``after`` for more."""

    data: list[GrantLine]
    has_more: bool
    next_after: int | None


@post(
    "/v1/accounts/{account_id:str}/grants",
    response_headers=COMMAND_HEADERS,
    status_code=201,
    guards=[allow(Scope.LEDGER_WRITE)],
    dto=Body[GrantRequest],
    return_dto=None,
    responses=write_errors(404),
)
async def grant_credits(
    account_id: FromPath[str],
    data: Annotated[
        GrantRequest,
        Documented(
            examples=[
                example(
                    "a promotion",
                    {
                        "amount": 500,
                        "expires_at": "2027-01-31T23:59:59Z",
                        "priority": 10,
                        "reason": "welcome offer",
                    },
                )
            ]
        ),
    ],
    services: ServicesDependency,
    idempotency_key: IdempotencyKey,
) -> GrantAnswer:
    """Give credits: they burn after the allowance and before top-ups, lowest priority first."""
    granted: GrantAnswer = await services.ledger.execute(
        GrantCredits(
            account_id=account_id,
            amount=data.amount,
            priority=DEFAULT_PRIORITY if data.priority is None else data.priority,
            expires_at=data.expires_at,
            reason=data.reason or "",
            idempotency_key=idempotency_key,
        )
    )
    return granted


@post(
    "/v1/accounts/{account_id:str}/grants/{grant_id:str}/void",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    guards=[allow(Scope.LEDGER_WRITE)],
    dto=OptionalBody[VoidGrantRequest],
    return_dto=None,
    responses=write_errors(
        404, 409, conflict="The grant has already expired or been voided.", on_account="grant"
    ),
)
async def void_grant(
    account_id: FromPath[str],
    grant_id: FromPath[str],
    services: ServicesDependency,
    data: Annotated[
        VoidGrantRequest | None,
        Documented(examples=[example("ended early", {"reason": "promotion withdrawn"})]),
    ] = None,
    idempotency_key: OptionalIdempotencyKey = None,
) -> GrantClosedAnswer:
    """Withdraw a grant: what remains of it lapses now (what holds reserve, when they settle)."""
    voided: GrantClosedAnswer = await services.ledger.execute(
        VoidGrant(
            account_id=account_id,
            grant_id=grant_id,
            reason=(data.reason if data is not None else None) or "",
            idempotency_key=idempotency_key,
        )
    )
    return voided


@get(
    "/v1/accounts/{account_id:str}/grants",
    response_headers=VIEW_READ_HEADERS,
    guards=[allow(Scope.LEDGER_WRITE, Scope.LEDGER_AUDIT)],
    responses=errors(401, 403, 404, 422, 503),
)
async def list_grants(
    account_id: FromPath[str],
    services: ServicesDependency,
    status: Status = None,
    limit: Limit = None,
    after: After = None,
) -> Grants:
    """The account's grants with what remains of each, newest first (``status`` filters)."""
    problems: dict[str, list[str]] = {}
    if status is not None and status not in GRANT_STATUSES:
        problems["status"] = [
            f"The selected status is invalid. Choose from {', '.join(GRANT_STATUSES)}."
        ]
    try:
        chosen = page(limit, after)
    except ValidationFailed as failed:
        problems |= failed.errors
    if problems:
        raise ValidationFailed(problems)
    await services.ledger.account(account_id)  # 404 for no such account
    # The caller sees its own grants and voids: the views have applied the account's last
    # event, or a second has passed (as the transactions list, api/read_side.py).
    written = await services.reads.primary.store.last_position(account_stream_id(account_id))
    rows = await grants_now(
        services,
        account_id,
        status or "all",
        limit=chosen.limit + 1,
        before=chosen.after,
        at_least=written,
    )
    return page_of_rows(Grants, rows, chosen.limit)


# One router, guards on each route: a path served from two routers would answer OPTIONS
# with one router's methods only (Litestar keeps one OPTIONS handler, not their union).
GRANTS = Router(
    "/",
    route_handlers=[grant_credits, void_grant, list_grants],
    security=BEARER,
    tags=["grants"],
)

"""Grant routes: promotional or contractual credits given by internal services (``ledger:write``)."""

from __future__ import annotations

from typing import Annotated

from litestar import Router, post
from litestar.params import Body as Documented
from litestar.params import FromPath

from api.access.guards import allow
from api.access.tokens import Scope
from api.openapi import BEARER, errors, example
from api.schemas import GrantRequest, VoidGrantRequest
from api.services import ServicesDependency
from api.validation import Body, IdempotencyKey, OptionalBody
from ledger.commands import GrantCredits, VoidGrant
from ledger.handlers.grants import GrantAnswer, GrantClosedAnswer


@post(
    "/v1/accounts/{account_id:str}/grants",
    status_code=201,
    dto=Body[GrantRequest],
    return_dto=None,
    responses=errors(401, 403, 404, 413, 422, 503),
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
            priority=data.priority,
            expires_at=data.expires_at,
            reason=data.reason or "",
            idempotency_key=idempotency_key,
        )
    )
    return granted


@post(
    "/v1/accounts/{account_id:str}/grants/{grant_id:str}/void",
    status_code=200,
    dto=OptionalBody[VoidGrantRequest],
    return_dto=None,
    responses=errors(
        401, 403, 404, 409, 413, 422, 503, conflict="The grant has already expired or been voided."
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
) -> GrantClosedAnswer:
    """Withdraw a grant: what remains of it lapses now (what holds reserve, when they settle)."""
    voided: GrantClosedAnswer = await services.ledger.execute(
        VoidGrant(
            account_id=account_id,
            grant_id=grant_id,
            reason=(data.reason if data is not None else None) or "",
        )
    )
    return voided


GRANTS = Router(
    "/",
    route_handlers=[grant_credits, void_grant],
    guards=[allow(Scope.LEDGER_WRITE)],
    security=BEARER,
    tags=["grants"],
)

"""Hold routes: reserve credits before work, capture or release after (``ledger:write``)."""

from __future__ import annotations

from typing import Annotated

from litestar import Router, get, post
from litestar.params import Body as Documented
from litestar.params import FromPath

from api.access.guards import allow
from api.access.tokens import Scope
from api.dependencies import ServicesDependency
from api.express import Call, express
from api.openapi import BEARER, COMMAND_HEADERS, errors, example, write_errors
from api.schemas import DEFAULT_HOLD_SECONDS, CaptureHoldRequest, PlaceHoldRequest
from api.services import Services
from api.validation import Body, IdempotencyKey, OptionalIdempotencyKey
from ledger.commands import HoldOutcome, PlaceHold, SettleHold
from ledger.handlers.holds import Hold

SETTLED_CONFLICT = "The hold expired or was already settled."


async def place(
    services: Services, account_id: str, data: PlaceHoldRequest, idempotency_key: str
) -> Hold:
    """Reserve ``data.amount`` of ``account_id`` once per ``idempotency_key``."""
    hold: Hold = await services.ledger.execute(
        PlaceHold(
            account_id=account_id,
            amount=data.amount,
            expires_in_seconds=data.expires_in_seconds or DEFAULT_HOLD_SECONDS,
            reason=data.reason or "",
            idempotency_key=idempotency_key,
        )
    )
    return hold


async def settle(
    services: Services,
    account_id: str,
    hold_id: str,
    outcome: HoldOutcome,
    amount: int,
    idempotency_key: str | None,
) -> Hold:
    """Capture ``amount`` of a hold, or release it (``outcome``; the amount is then 0)."""
    settled: Hold = await services.ledger.execute(
        SettleHold(
            account_id=account_id,
            hold_id=hold_id,
            outcome=outcome,
            amount=amount,
            idempotency_key=idempotency_key,
        )
    )
    return settled


async def place_hold_express(call: Call) -> Hold:
    """``place_hold`` in the express lane (api/express.py)."""
    data = call.body_as(PlaceHoldRequest)
    return await place(call.services, call.path_param("account_id"), data, call.idempotency_key())


async def capture_hold_express(call: Call) -> Hold:
    """``capture_hold`` in the express lane (api/express.py)."""
    data = call.body_as(CaptureHoldRequest)
    key = call.optional_idempotency_key()
    account_id, hold_id = call.path_param("account_id"), call.path_param("hold_id")
    return await settle(call.services, account_id, hold_id, "captured", data.amount, key)


async def release_hold_express(call: Call) -> Hold:
    """``release_hold`` in the express lane (api/express.py)."""
    key = call.optional_idempotency_key()
    account_id, hold_id = call.path_param("account_id"), call.path_param("hold_id")
    return await settle(call.services, account_id, hold_id, "released", 0, key)


@post(
    "/v1/accounts/{account_id:str}/holds",
    response_headers=COMMAND_HEADERS,
    status_code=201,
    dto=Body[PlaceHoldRequest],
    return_dto=None,
    responses=write_errors(402, 404),
    middleware=[express(place_hold_express)],
)
async def place_hold(
    account_id: FromPath[str],
    data: Annotated[
        PlaceHoldRequest,
        Documented(
            examples=[
                example(
                    "a hold", {"amount": 300, "expires_in_seconds": 900, "reason": "video render"}
                )
            ]
        ),
    ],
    services: ServicesDependency,
    idempotency_key: IdempotencyKey,
) -> Hold:
    """Reserve credits until captured, released or expired; 402 when not available."""
    return await place(services, account_id, data, idempotency_key)


@post(
    "/v1/accounts/{account_id:str}/holds/{hold_id:str}/capture",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    dto=Body[CaptureHoldRequest],
    return_dto=None,
    responses=write_errors(
        404,
        409,
        conflict=SETTLED_CONFLICT,
        on_account="hold",
        invalid={
            "more than the hold reserves": {
                "amount": "The amount must not be greater than the held amount. "
                "The hold reserves 300 credits; 400 asked."
            }
        },
    ),
    middleware=[express(capture_hold_express)],
)
async def capture_hold(
    account_id: FromPath[str],
    hold_id: FromPath[str],
    data: Annotated[
        CaptureHoldRequest, Documented(examples=[example("a capture", {"amount": 250})])
    ],
    services: ServicesDependency,
    idempotency_key: OptionalIdempotencyKey = None,
) -> Hold:
    """Spend up to the held amount; the rest goes back. The same request again (and the
    same Idempotency-Key, if one was given) returns the first answer; any other is 409."""
    return await settle(services, account_id, hold_id, "captured", data.amount, idempotency_key)


@post(
    "/v1/accounts/{account_id:str}/holds/{hold_id:str}/release",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    responses=errors(
        401,
        403,
        404,
        409,
        422,
        503,
        conflict="The hold was already captured.",
        on_account="hold",
    ),
    middleware=[express(release_hold_express, reads_body=False)],
)
async def release_hold(
    account_id: FromPath[str],
    hold_id: FromPath[str],
    services: ServicesDependency,
    idempotency_key: OptionalIdempotencyKey = None,
) -> Hold:
    """Give a hold's credits back. The same request again returns the first answer."""
    return await settle(services, account_id, hold_id, "released", 0, idempotency_key)


@get(
    "/v1/accounts/{account_id:str}/holds/{hold_id:str}",
    guards=[allow(Scope.LEDGER_WRITE, Scope.LEDGER_AUDIT)],
    responses=errors(401, 403, 404, 503, on_account="hold"),
)
async def get_hold(
    account_id: FromPath[str], hold_id: FromPath[str], services: ServicesDependency
) -> Hold:
    """A hold as it stands: held, or how it was settled."""
    return await services.ledger.hold(account_id, hold_id)


HOLDS = Router(
    "/",
    route_handlers=[
        Router(
            "/",
            route_handlers=[place_hold, capture_hold, release_hold],
            guards=[allow(Scope.LEDGER_WRITE)],
        ),
        get_hold,
    ],
    security=BEARER,
    tags=["holds"],
)

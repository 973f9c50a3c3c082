"""Hold routes: reserve credits before work, capture or release after (``ledger:write``)."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.params import FromPath

from api.access.guards import Caller, require_scope
from api.access.tokens import Scope
from api.openapi import BEARER, CaptureHoldRequest, PlaceHoldRequest, documented, errors
from api.services import ServicesDependency
from api.validation import Checker, IdempotencyKey, checked_idempotency_key, json_object
from ledger.commands import PlaceHold, SettleHold
from ledger.handlers.holds import Hold

MAX_HOLD = 1_000_000_000_000
MAX_REASON_LENGTH = 500
DEFAULT_EXPIRY_SECONDS = 900
MAX_EXPIRY_SECONDS = 7 * 24 * 3600
HOLD_EXAMPLE = {
    "hold_id": "hold_5f0c2a9e81d34b7aa1c3e9d2",
    "account_id": "acct_42",
    "status": "held",
    "amount": 300,
    "captured": 0,
    "released": 0,
    "reason": "video render",
    "expires_at": "2026-11-25T18:15:00+00:00",
    "balance": 1000,
    "held": 300,
    "available": 700,
}
CAPTURED_EXAMPLE = {
    **HOLD_EXAMPLE,
    "status": "captured",
    "captured": 250,
    "released": 50,
    "balance": 750,
    "held": 0,
    "available": 750,
}


@post(
    "/v1/accounts/{account_id:str}/holds",
    status_code=201,
    tags=["holds"],
    security=BEARER,
    responses=errors(401, 402, 403, 404, 413, 422, 503),
    operation_class=documented(
        PlaceHoldRequest,
        examples={"a hold": {"amount": 300, "expires_in_seconds": 900, "reason": "video render"}},
        required_headers=("Idempotency-Key",),
        answer=HOLD_EXAMPLE,
    ),
)
async def place_hold(
    account_id: FromPath[str],
    request: Request,
    principal: Caller,
    services: ServicesDependency,
    idempotency_key: IdempotencyKey = None,
) -> Hold:
    """Reserve credits until captured, released or expired; 402 when not available."""
    require_scope(principal, Scope.LEDGER_WRITE)
    key = checked_idempotency_key(idempotency_key, required=True)
    checker = Checker(json_object(await request.body()))
    amount = checker.integer("amount", minimum=1, maximum=MAX_HOLD)
    expires_in = checker.integer(
        "expires_in_seconds",
        minimum=1,
        maximum=MAX_EXPIRY_SECONDS,
        required=False,
        default=DEFAULT_EXPIRY_SECONDS,
    )
    reason = checker.string("reason", max_length=MAX_REASON_LENGTH, required=False)
    checker.done()
    assert amount is not None
    assert expires_in is not None
    assert key is not None
    hold: Hold = await services.ledger.execute(
        PlaceHold(
            account_id=account_id,
            amount=amount,
            expires_in_seconds=expires_in,
            reason=reason or "",
            idempotency_key=key,
        )
    )
    return hold


@post(
    "/v1/accounts/{account_id:str}/holds/{hold_id:str}/capture",
    status_code=200,
    tags=["holds"],
    security=BEARER,
    responses=errors(
        401, 403, 404, 409, 413, 422, 503, conflict="The hold expired or was already settled."
    ),
    operation_class=documented(
        CaptureHoldRequest, examples={"a capture": {"amount": 250}}, answer=CAPTURED_EXAMPLE
    ),
)
async def capture_hold(
    account_id: FromPath[str],
    hold_id: FromPath[str],
    request: Request,
    principal: Caller,
    services: ServicesDependency,
) -> Hold:
    """Spend up to the held amount; the rest goes back. Repeating it returns the first answer."""
    require_scope(principal, Scope.LEDGER_WRITE)
    checker = Checker(json_object(await request.body()))
    amount = checker.integer("amount", minimum=0, maximum=MAX_HOLD)
    checker.done()
    assert amount is not None
    captured: Hold = await services.ledger.execute(
        SettleHold(account_id=account_id, hold_id=hold_id, outcome="captured", amount=amount)
    )
    return captured


@post(
    "/v1/accounts/{account_id:str}/holds/{hold_id:str}/release",
    status_code=200,
    tags=["holds"],
    security=BEARER,
    responses=errors(401, 403, 404, 409, 503, conflict="The hold was already captured."),
    operation_class=documented(
        answer={**CAPTURED_EXAMPLE, "status": "released", "captured": 0, "released": 300}
    ),
)
async def release_hold(
    account_id: FromPath[str],
    hold_id: FromPath[str],
    principal: Caller,
    services: ServicesDependency,
) -> Hold:
    """Give a hold's credits back. Repeating it returns the first answer."""
    require_scope(principal, Scope.LEDGER_WRITE)
    released: Hold = await services.ledger.execute(
        SettleHold(account_id=account_id, hold_id=hold_id, outcome="released")
    )
    return released


@get(
    "/v1/accounts/{account_id:str}/holds/{hold_id:str}",
    tags=["holds"],
    security=BEARER,
    responses=errors(401, 403, 404, 503),
    operation_class=documented(answer=HOLD_EXAMPLE),
)
async def get_hold(
    account_id: FromPath[str],
    hold_id: FromPath[str],
    principal: Caller,
    services: ServicesDependency,
) -> Hold:
    """A hold as it stands: held, or how it was settled."""
    require_scope(principal, Scope.LEDGER_WRITE, Scope.LEDGER_AUDIT)
    return await services.ledger.hold(account_id, hold_id)


ROUTES = [place_hold, capture_hold, release_hold, get_hold]

"""Hold routes: reserve credits before work, capture or release after (``ledger:write``)."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.params import FromPath

from api.auth import Caller, require_scope
from api.services import ServicesDependency
from api.validation import Checker, IdempotencyKey, checked_idempotency_key, json_object
from ledger.holds import Hold, PlaceHold
from ledger.tokens import Scope

MAX_HOLD = 1_000_000_000_000
MAX_REASON_LENGTH = 500
DEFAULT_EXPIRY_SECONDS = 900
MAX_EXPIRY_SECONDS = 7 * 24 * 3600


@post("/v1/accounts/{account_id:str}/holds", status_code=201, tags=["holds"])
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
    return await services.holds.place(
        PlaceHold(
            account_id=account_id,
            amount=amount,
            expires_in_seconds=expires_in,
            reason=reason or "",
            idempotency_key=key,
        )
    )


@post("/v1/accounts/{account_id:str}/holds/{hold_id:str}/capture", status_code=200, tags=["holds"])
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
    return await services.holds.capture(account_id, hold_id, amount)


@post("/v1/accounts/{account_id:str}/holds/{hold_id:str}/release", status_code=200, tags=["holds"])
async def release_hold(
    account_id: FromPath[str],
    hold_id: FromPath[str],
    principal: Caller,
    services: ServicesDependency,
) -> Hold:
    """Give a hold's credits back. Repeating it returns the first answer."""
    require_scope(principal, Scope.LEDGER_WRITE)
    return await services.holds.release(account_id, hold_id)


@get("/v1/accounts/{account_id:str}/holds/{hold_id:str}", tags=["holds"])
async def get_hold(
    account_id: FromPath[str],
    hold_id: FromPath[str],
    principal: Caller,
    services: ServicesDependency,
) -> Hold:
    """A hold as it stands: held, or how it was settled."""
    require_scope(principal, Scope.LEDGER_WRITE, Scope.LEDGER_AUDIT)
    return await services.holds.get(account_id, hold_id)


ROUTES = [place_hold, capture_hold, release_hold, get_hold]

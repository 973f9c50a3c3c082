"""Internal service routes on accounts (token scope ``ledger:write``; reads also ``ledger:audit``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated

from litestar import Router, get, patch, post
from litestar.params import Body as Documented
from litestar.params import FromPath

from api.access.guards import allow, own_account_or
from api.access.tokens import Scope
from api.dependencies import ServicesDependency
from api.express import Call, Declined, express
from api.openapi import BEARER, COMMAND_HEADERS, VIEW_READ_HEADERS, errors, example, write_errors
from api.routes.auditors import AsOf, credits_as_of
from api.routes.customers import account_credits
from api.schemas import (
    AccountCredits,
    AccountPlan,
    ChangePlanRequest,
    MonthlyResetRequest,
    OpenAccountRequest,
    SpendRequest,
)
from api.services import Services
from api.validation import Body, IdempotencyKey, OptionalBody, OptionalIdempotencyKey
from ledger.commands import ChangeAllowance, OpenAccount, ResetMonth, SpendCredits
from ledger.handlers.accounts import Spent


@post(
    "/v1/accounts",
    response_headers=COMMAND_HEADERS,
    status_code=201,
    dto=Body[OpenAccountRequest],
    return_dto=None,
    responses=write_errors(409),
)
async def open_account(
    data: Annotated[
        OpenAccountRequest,
        Documented(
            examples=[example("an account", {"account_id": "acct_42", "monthly_allowance": 5000})]
        ),
    ],
    services: ServicesDependency,
) -> AccountCredits:
    """Open an account; its full monthly allowance is available at once."""
    allowance = data.monthly_allowance
    command = OpenAccount(
        account_id=data.account_id,
        monthly_allowance=services.default_monthly_allowance if allowance is None else allowance,
    )
    return AccountCredits.of(await services.ledger.execute(command))


async def get_account_credits_express(call: Call) -> AccountCredits:
    """``get_account_credits`` without ``as_of``, in the express lane (api/express.py)."""
    if call.scope["query_string"]:
        raise Declined
    return await account_credits(call.services, call.path_param("account_id"))


@get(
    "/v1/accounts/{account_id:str}/credits",
    response_headers=VIEW_READ_HEADERS,
    guards=[own_account_or(Scope.LEDGER_WRITE, Scope.LEDGER_AUDIT)],
    responses=errors(401, 403, 404, 422, 503),
    middleware=[express(get_account_credits_express, reads_body=False)],
)
async def get_account_credits(
    account_id: FromPath[str], services: ServicesDependency, as_of: AsOf = None
) -> AccountCredits:
    """Any account's balance, for internal services and auditors; ``as_of`` replays history."""
    if as_of is not None:
        return await credits_as_of(services, account_id, as_of)
    return await account_credits(services, account_id)


# ``spend`` and ``spend_credits_express`` are not coroutines of their own: each hands back
# the ledger's (two frames fewer a spend).
def spend(
    services: Services, account_id: str, data: SpendRequest, idempotency_key: str
) -> Awaitable[Spent]:
    """Spend ``data.amount`` of ``account_id`` once per ``idempotency_key``."""
    spent: Awaitable[Spent] = services.ledger.execute(
        SpendCredits(
            account_id=account_id,
            amount=data.amount,
            reason=data.reason or "",
            idempotency_key=idempotency_key,
        )
    )
    return spent


def spend_credits_express(call: Call) -> Awaitable[Spent]:
    """``spend_credits`` in the express lane (api/express.py)."""
    data = call.body_as(SpendRequest)
    return spend(call.services, call.path_param("account_id"), data, call.idempotency_key())


@post(
    "/v1/accounts/{account_id:str}/spend",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    dto=Body[SpendRequest],
    return_dto=None,
    responses=write_errors(402, 404),
    middleware=[express(spend_credits_express)],
)
async def spend_credits(
    account_id: FromPath[str],
    data: Annotated[
        SpendRequest,
        Documented(examples=[example("a spend", {"amount": 25, "reason": "image generation"})]),
    ],
    services: ServicesDependency,
    idempotency_key: IdempotencyKey,
) -> Spent:
    """Spend credits: allowance, then grants, then top-ups; 402 and nothing recorded when short."""
    return await spend(services, account_id, data, idempotency_key)


@post(
    "/v1/accounts/{account_id:str}/monthly-reset",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    dto=OptionalBody[MonthlyResetRequest],
    return_dto=None,
    responses=write_errors(
        404, 409, conflict="The period is earlier than the account's last reset."
    ),
)
async def reset_month(
    account_id: FromPath[str],
    services: ServicesDependency,
    data: Annotated[
        MonthlyResetRequest | None,
        Documented(
            examples=[example("a period", {"period": "2026-12"}), example("this month", {})]
        ),
    ] = None,
    idempotency_key: OptionalIdempotencyKey = None,
) -> AccountCredits:
    """Set the allowance back to the plan for ``period`` (default: this month), once."""
    period = data.period if data is not None else None
    command = ResetMonth(account_id=account_id, period=period, idempotency_key=idempotency_key)
    return AccountCredits.of(await services.ledger.execute(command))


@patch(
    "/v1/accounts/{account_id:str}",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    dto=Body[ChangePlanRequest],
    return_dto=None,
    responses=write_errors(404),
)
async def change_plan(
    account_id: FromPath[str],
    data: Annotated[
        ChangePlanRequest,
        Documented(examples=[example("a bigger plan", {"monthly_allowance": 8000})]),
    ],
    services: ServicesDependency,
) -> AccountPlan:
    """Change the monthly allowance; it takes effect at the next reset."""
    command = ChangeAllowance(account_id=account_id, monthly_allowance=data.monthly_allowance)
    return AccountPlan.of(await services.ledger.execute(command))


INTERNAL = Router(
    "/",
    route_handlers=[
        Router(
            "/",
            route_handlers=[open_account, spend_credits, reset_month, change_plan],
            guards=[allow(Scope.LEDGER_WRITE)],
        ),
        get_account_credits,
    ],
    security=BEARER,
    tags=["internal"],
)

"""Internal service routes (token scope ``ledger:write``; reads also ``ledger:audit``)."""

from __future__ import annotations

from litestar import Request, get, patch, post
from litestar.params import FromPath

from api.access.guards import Caller, require_account_access, require_scope
from api.access.tokens import Scope
from api.openapi import (
    BEARER,
    CREDITS_EXAMPLE,
    ChangePlanRequest,
    MonthlyResetRequest,
    OpenAccountRequest,
    SpendRequest,
    documented,
    errors,
)
from api.routes.auditors import AsOf, credits_as_of
from api.routes.customers import account_credits
from api.schemas import AccountCredits, AccountPlan
from api.services import ServicesDependency
from api.validation import Checker, IdempotencyKey, checked_idempotency_key, json_object
from ledger.commands import ChangeAllowance, OpenAccount, ResetMonth, SpendCredits
from ledger.domain.account import ACCOUNT_ID_PATTERN, PERIOD_PATTERN
from ledger.handlers.accounts import Spent

MAX_MONTHLY_ALLOWANCE = 1_000_000_000


@post(
    "/v1/accounts",
    status_code=201,
    tags=["internal"],
    security=BEARER,
    responses=errors(401, 403, 409, 413, 422, 503),
    operation_class=documented(
        OpenAccountRequest,
        examples={"an account": {"account_id": "acct_42", "monthly_allowance": 5000}},
        answer={
            **CREDITS_EXAMPLE,
            "balance": 5000,
            "monthly_allowance": 5000,
            "allowance_remaining": 5000,
            "topup_balance": 0,
            "held": 0,
            "available": 5000,
        },
    ),
)
async def open_account(
    request: Request, principal: Caller, services: ServicesDependency
) -> AccountCredits:
    """Open an account; its full monthly allowance is available at once."""
    require_scope(principal, Scope.LEDGER_WRITE)
    checker = Checker(json_object(await request.body()))
    account_id = checker.string(
        "account_id",
        max_length=100,
        pattern=ACCOUNT_ID_PATTERN,
        pattern_hint=" Use letters, digits and _ . : - (for example acct_123).",
    )
    allowance = checker.integer(
        "monthly_allowance",
        minimum=0,
        maximum=MAX_MONTHLY_ALLOWANCE,
        required=False,
        default=services.default_monthly_allowance,
    )
    checker.done()
    assert account_id is not None
    assert allowance is not None
    return AccountCredits.of(
        await services.ledger.execute(OpenAccount(account_id=account_id, monthly_allowance=allowance))
    )


@get(
    "/v1/accounts/{account_id:str}/credits",
    tags=["internal"],
    security=BEARER,
    responses=errors(401, 403, 404, 422, 503),
    operation_class=documented(answer=CREDITS_EXAMPLE),
)
async def get_account_credits(
    account_id: FromPath[str], principal: Caller, services: ServicesDependency, as_of: AsOf = None
) -> AccountCredits:
    """Any account's balance, for internal services and auditors; ``as_of`` replays history."""
    require_account_access(principal, account_id, Scope.LEDGER_WRITE, Scope.LEDGER_AUDIT)
    if as_of is not None:
        return await credits_as_of(services, account_id, as_of)
    return await account_credits(services, account_id)


MAX_SPEND = 1_000_000_000_000
MAX_REASON_LENGTH = 500


@post(
    "/v1/accounts/{account_id:str}/spend",
    status_code=200,
    tags=["internal"],
    security=BEARER,
    responses=errors(401, 402, 403, 404, 413, 422, 503),
    operation_class=documented(
        SpendRequest,
        examples={"a spend": {"amount": 25, "reason": "image generation"}},
        required_headers=("Idempotency-Key",),
        answer={
            "account_id": "acct_42",
            "amount": 25,
            "from_allowance": 25,
            "from_topup": 0,
            "reason": "image generation",
            "balance": 1475,
            "allowance_remaining": 475,
            "topup_balance": 1000,
            "monthly_allowance": 1000,
            "period": "2026-12",
        },
    ),
)
async def spend_credits(
    account_id: FromPath[str],
    request: Request,
    principal: Caller,
    services: ServicesDependency,
    idempotency_key: IdempotencyKey = None,
) -> Spent:
    """Spend credits: allowance first, then top-ups; 402 and nothing recorded when short."""
    require_scope(principal, Scope.LEDGER_WRITE)
    key = checked_idempotency_key(idempotency_key, required=True)
    checker = Checker(json_object(await request.body()))
    amount = checker.integer("amount", minimum=1, maximum=MAX_SPEND)
    reason = checker.string("reason", max_length=MAX_REASON_LENGTH, required=False)
    checker.done()
    assert amount is not None
    assert key is not None
    spent: Spent = await services.ledger.execute(
        SpendCredits(account_id=account_id, amount=amount, reason=reason or "", idempotency_key=key)
    )
    return spent


@post(
    "/v1/accounts/{account_id:str}/monthly-reset",
    status_code=200,
    tags=["internal"],
    security=BEARER,
    responses=errors(
        401,
        403,
        404,
        409,
        413,
        422,
        503,
        conflict="The period is earlier than the account's last reset.",
    ),
    operation_class=documented(
        MonthlyResetRequest,
        body_required=False,
        examples={"a period": {"period": "2026-12"}, "this month": {}},
        answer=CREDITS_EXAMPLE,
    ),
)
async def reset_month(
    account_id: FromPath[str], request: Request, principal: Caller, services: ServicesDependency
) -> AccountCredits:
    """Set the allowance back to the plan for ``period`` (default: this month), once."""
    require_scope(principal, Scope.LEDGER_WRITE)
    body = await request.body()
    checker = Checker(json_object(body) if body.strip() else {})
    period = checker.string(
        "period",
        max_length=7,
        pattern=PERIOD_PATTERN,
        pattern_hint=" Use YYYY-MM.",
        required=False,
    )
    checker.done()
    return AccountCredits.of(
        await services.ledger.execute(ResetMonth(account_id=account_id, period=period))
    )


@patch(
    "/v1/accounts/{account_id:str}",
    status_code=200,
    tags=["internal"],
    security=BEARER,
    responses=errors(401, 403, 404, 413, 422, 503),
    operation_class=documented(
        ChangePlanRequest,
        examples={"a bigger plan": {"monthly_allowance": 8000}},
        answer={
            "account_id": "acct_42",
            "monthly_allowance": 5000,
            "next_monthly_allowance": 8000,
            "period": "2026-12",
        },
    ),
)
async def change_plan(
    account_id: FromPath[str], request: Request, principal: Caller, services: ServicesDependency
) -> AccountPlan:
    """Change the monthly allowance; it takes effect at the next reset."""
    require_scope(principal, Scope.LEDGER_WRITE)
    checker = Checker(json_object(await request.body()))
    allowance = checker.integer("monthly_allowance", minimum=0, maximum=MAX_MONTHLY_ALLOWANCE)
    checker.done()
    assert allowance is not None
    return AccountPlan.of(
        await services.ledger.execute(
            ChangeAllowance(account_id=account_id, monthly_allowance=allowance)
        )
    )


ROUTES = [open_account, get_account_credits, spend_credits, reset_month, change_plan]

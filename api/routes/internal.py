"""Internal service routes (token scope ``ledger:write``; reads also ``ledger:audit``)."""

from __future__ import annotations

from litestar import Request, get, patch, post
from litestar.params import FromPath

from api.auth import Caller, require_account_access, require_scope
from api.routes.auditors import AsOf, credits_as_of
from api.routes.customers import account_credits
from api.schemas import AccountCredits, AccountPlan
from api.services import ServicesDependency
from api.validation import Checker, IdempotencyKey, checked_idempotency_key, json_object
from ledger.accounts import SpendCredits, Spent
from ledger.domain.account import ACCOUNT_ID_PATTERN, PERIOD_PATTERN
from ledger.tokens import Scope

MAX_MONTHLY_ALLOWANCE = 1_000_000_000


@post("/v1/accounts", status_code=201, tags=["internal"])
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
    return AccountCredits.of(await services.accounts.open(account_id, allowance))


@get("/v1/accounts/{account_id:str}/credits", tags=["internal"])
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


@post("/v1/accounts/{account_id:str}/spend", status_code=200, tags=["internal"])
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
    return await services.accounts.spend(
        SpendCredits(account_id=account_id, amount=amount, reason=reason or "", idempotency_key=key)
    )


@post("/v1/accounts/{account_id:str}/monthly-reset", status_code=200, tags=["internal"])
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
    return AccountCredits.of(await services.accounts.reset_month(account_id, period))


@patch("/v1/accounts/{account_id:str}", status_code=200, tags=["internal"])
async def change_plan(
    account_id: FromPath[str], request: Request, principal: Caller, services: ServicesDependency
) -> AccountPlan:
    """Change the monthly allowance; it takes effect at the next reset."""
    require_scope(principal, Scope.LEDGER_WRITE)
    checker = Checker(json_object(await request.body()))
    allowance = checker.integer("monthly_allowance", minimum=0, maximum=MAX_MONTHLY_ALLOWANCE)
    checker.done()
    assert allowance is not None
    return AccountPlan.of(await services.accounts.change_allowance(account_id, allowance))


ROUTES = [open_account, get_account_credits, spend_credits, reset_month, change_plan]

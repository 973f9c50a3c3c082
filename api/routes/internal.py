"""Internal service routes (token scope ``ledger:write``; reads also ``ledger:audit``)."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.params import FromPath

from api.auth import Caller, require_account_access, require_scope
from api.schemas import AccountCredits
from api.services import ServicesDependency
from api.validation import Checker, json_object
from ledger.domain.account import ACCOUNT_ID_PATTERN
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
    account_id: FromPath[str], principal: Caller, services: ServicesDependency
) -> AccountCredits:
    """Any account's balance, for internal services and auditors."""
    require_account_access(principal, account_id, Scope.LEDGER_WRITE, Scope.LEDGER_AUDIT)
    return AccountCredits.of(await services.accounts.get(account_id))


ROUTES = [open_account, get_account_credits]

"""Customer routes (token scope ``credits``, bound to one account)."""

from __future__ import annotations

from litestar import Request, get, post

from api.auth import Caller, customer_account
from api.schemas import AccountCredits
from api.services import ServicesDependency
from api.validation import Checker, IdempotencyKey, checked_idempotency_key, json_object
from ledger.purchases import MAX_CREDITS, MIN_CREDITS, CheckoutStarted, RequestCheckout


@post("/v1/credits/purchase", status_code=200, tags=["customers"])
async def purchase_credits(
    request: Request,
    principal: Caller,
    services: ServicesDependency,
    idempotency_key: IdempotencyKey = None,
) -> CheckoutStarted:
    """Start a Stripe Checkout for ``{"credits": 100..10000}``; credits arrive when it is paid."""
    account_id = customer_account(principal)
    checker = Checker(json_object(await request.body()))
    credits = checker.integer("credits", minimum=MIN_CREDITS, maximum=MAX_CREDITS)
    checker.done()
    assert credits is not None
    return await services.purchases.request_checkout(
        RequestCheckout(
            account_id=account_id,
            credits=credits,
            idempotency_key=checked_idempotency_key(idempotency_key),
        )
    )


@get("/v1/credits", tags=["customers"])
async def get_credits(principal: Caller, services: ServicesDependency) -> AccountCredits:
    """The caller's balance: allowance remaining plus top-ups."""
    return AccountCredits.of(await services.accounts.get(customer_account(principal)))


ROUTES = [purchase_credits, get_credits]

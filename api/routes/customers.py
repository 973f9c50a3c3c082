"""Customer routes (token scope ``credits``, bound to one account)."""

from __future__ import annotations

from litestar import Request, get, post

from api.access.guards import Caller, customer_account
from api.openapi import BEARER, CREDITS_EXAMPLE, PurchaseRequest, documented, errors
from api.pagination import After, Limit, page
from api.schemas import AccountCredits, Transactions
from api.services import Services, ServicesDependency
from api.validation import Checker, IdempotencyKey, checked_idempotency_key, json_object
from ledger.handlers.purchases import CheckoutStarted
from ledger.service import MAX_CREDITS, MIN_CREDITS, RequestCheckout
from projections.queries import PurchaseRow


@post(
    "/v1/credits/purchase",
    status_code=200,
    tags=["customers"],
    security=BEARER,
    responses=errors(401, 403, 404, 413, 422, 502, 503),
    operation_class=documented(
        PurchaseRequest,
        examples={"a thousand credits": {"credits": 1000}},
        answer={
            "checkout_url": "https://checkout.stripe.com/c/pay/cs_test_a1B2c3",
            "session_id": "cs_test_a1B2c3",
        },
    ),
)
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
    return await services.ledger.request_checkout(
        RequestCheckout(
            account_id=account_id,
            credits=credits,
            idempotency_key=checked_idempotency_key(idempotency_key),
        )
    )


async def account_credits(services: Services, account_id: str) -> AccountCredits:
    """The projected balance; the write side while the projector has not seen the account."""
    row = await services.views.balance(account_id)
    return AccountCredits.of(row if row is not None else await services.ledger.account(account_id))


@get(
    "/v1/credits",
    tags=["customers"],
    security=BEARER,
    responses=errors(401, 403, 404, 503),
    operation_class=documented(answer=CREDITS_EXAMPLE),
)
async def get_credits(principal: Caller, services: ServicesDependency) -> AccountCredits:
    """The caller's balance: allowance remaining plus top-ups."""
    return await account_credits(services, customer_account(principal))


@get(
    "/v1/credits/purchases",
    tags=["customers"],
    security=BEARER,
    responses=errors(401, 403, 422, 503),
    operation_class=documented(),
)
async def list_purchases(
    principal: Caller, services: ServicesDependency, limit: Limit = None, after: After = None
) -> list[PurchaseRow]:
    """The caller's purchases, newest first; ``after`` takes the last one's ``position``."""
    chosen = page(limit, after)
    rows = await services.views.purchases(
        customer_account(principal), limit=chosen.limit, before=chosen.after
    )
    return rows


@get(
    "/v1/credits/transactions",
    tags=["customers"],
    security=BEARER,
    responses=errors(401, 403, 422, 503),
    operation_class=documented(),
)
async def list_transactions(
    principal: Caller, services: ServicesDependency, limit: Limit = None, after: After = None
) -> Transactions:
    """The caller's ledger lines, newest first, each with the balance after it."""
    chosen = page(limit, after)
    lines = await services.views.statement(
        customer_account(principal), limit=chosen.limit, before=chosen.after
    )
    next_after = lines[-1].position if len(lines) == chosen.limit else None
    return Transactions(data=lines, next_after=next_after)


ROUTES = [purchase_credits, get_credits, list_purchases, list_transactions]

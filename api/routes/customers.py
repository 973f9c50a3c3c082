"""Customer routes (token scope ``credits``, bound to one account)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, get, post
from litestar.params import Body as Documented

from api.access.guards import Caller, allow, customer_account
from api.access.tokens import Scope
from api.dependencies import ServicesDependency
from api.express import Call, Declined, express
from api.openapi import BEARER, COMMAND_HEADERS, VIEW_READ_HEADERS, errors, example, write_errors
from api.pagination import After, Limit, page, page_of_rows
from api.read_side import answered_from_the_write_side, views_caught_up
from api.routes.auditors import AsOf, credits_as_of
from api.schemas import AccountCredits, PurchaseRequest
from api.services import Services
from api.validation import Body, OptionalIdempotencyKey
from ledger.domain.ids import account_stream_id
from ledger.handlers.purchases import CheckoutStarted
from ledger.service import RequestCheckout
from projections.queries import PurchaseRow, StatementLine


class Purchases(msgspec.Struct, frozen=True):
    """A page of purchases, newest first; pass ``next_after`` as ``after`` for more."""

    data: list[PurchaseRow]
    has_more: bool
    next_after: int | None


class Transactions(msgspec.Struct, frozen=True):
    """A page of ledger lines, newest first; pass ``next_after`` as ``after`` for more."""

    data: list[StatementLine]
    has_more: bool
    next_after: int | None


@post(
    "/v1/credits/purchase",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    dto=Body[PurchaseRequest],
    return_dto=None,
    responses=write_errors(404, 502),
)
async def purchase_credits(
    data: Annotated[
        PurchaseRequest, Documented(examples=[example("a thousand credits", {"credits": 1000})])
    ],
    principal: Caller,
    services: ServicesDependency,
    idempotency_key: OptionalIdempotencyKey = None,
) -> CheckoutStarted:
    """Start a Stripe Checkout for ``{"credits": 100..10000}``; credits arrive when it is paid."""
    return await services.ledger.request_checkout(
        RequestCheckout(
            account_id=customer_account(principal),
            credits=data.credits,
            idempotency_key=idempotency_key,
        )
    )


async def account_credits(services: Services, account_id: str) -> AccountCredits:
    """The projected balance; the write side while the view has not applied the account's
    last event, or the request's ``Ledger-Min-Position`` in time (api/read_side.py), or
    while a hold or grant of the account is past its expiry and not yet recorded so (the
    write side shows them expired, as a spend now would find them)."""
    row = await services.reads.run(lambda source: source.views.balance(account_id))
    if row is not None and views_caught_up():
        return AccountCredits.of(row)
    answered_from_the_write_side()
    # From the store, not this process's memory: another replica may have written since.
    return AccountCredits.of(await services.ledger.account_now(account_id))


async def get_credits_express(call: Call) -> AccountCredits:
    """``get_credits`` without ``as_of``, in the express lane (api/express.py)."""
    if call.scope["query_string"]:
        raise Declined
    return await account_credits(call.services, customer_account(call.principal))


@get(
    "/v1/credits",
    response_headers=VIEW_READ_HEADERS,
    responses=errors(401, 403, 404, 422, 503),
    middleware=[express(get_credits_express, reads_body=False)],
)
async def get_credits(
    principal: Caller, services: ServicesDependency, as_of: AsOf = None
) -> AccountCredits:
    """The caller's balance: allowance remaining plus grants plus top-ups; ``as_of`` replays
    history, as on ``/v1/accounts/{account_id}/credits``."""
    if as_of is not None:
        return await credits_as_of(services, customer_account(principal), as_of)
    return await account_credits(services, customer_account(principal))


@get(
    "/v1/credits/purchases",
    response_headers=VIEW_READ_HEADERS,
    responses=errors(401, 403, 422, 503),
)
async def list_purchases(
    principal: Caller, services: ServicesDependency, limit: Limit = None, after: After = None
) -> Purchases:
    """The caller's purchases, newest first; ``after`` takes the last one's ``position``."""
    chosen = page(limit, after)
    account_id = customer_account(principal)
    # What was committed before this read, the caller's own purchase and payment among it:
    # a purchase lives on its Checkout session's stream, which no index finds by account.
    written = await services.reads.primary.store.head_position()
    rows = await services.reads.run(
        lambda source: source.views.purchases(
            account_id, limit=chosen.limit + 1, before=chosen.after
        ),
        at_least=written,
    )
    return page_of_rows(Purchases, rows, chosen.limit)


@get(
    "/v1/credits/transactions",
    response_headers=VIEW_READ_HEADERS,
    responses=errors(401, 403, 422, 503),
)
async def list_transactions(
    principal: Caller, services: ServicesDependency, limit: Limit = None, after: After = None
) -> Transactions:
    """The caller's ledger lines, newest first, each with the balance after it."""
    chosen = page(limit, after)
    account_id = customer_account(principal)
    # The caller sees its own spends, holds and payments: the view has applied the account's
    # last event, or a second has passed (as for Ledger-Min-Position, api/read_side.py).
    written = await services.reads.primary.store.last_position(account_stream_id(account_id))
    lines = await services.reads.run(
        lambda source: source.views.statement(
            account_id, limit=chosen.limit + 1, before=chosen.after
        ),
        at_least=written,
    )
    return page_of_rows(Transactions, lines, chosen.limit)


CUSTOMERS = Router(
    "/",
    route_handlers=[purchase_credits, get_credits, list_purchases, list_transactions],
    guards=[allow(Scope.CREDITS)],
    security=BEARER,
    tags=["customers"],
)

"""The OpenAPI document: its configuration, the error answers each route lists, and auth.

Request bodies and answers are documented by Litestar from the Structs routes
take and return (api/schemas.py).
"""

from __future__ import annotations

from typing import Any

from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Example, OpenAPI, OpenAPIResponse, SecurityScheme

from api.schemas import ErrorBody, ValidationErrorBody

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
"""The ``security`` of every route that takes ``Authorization: Bearer <token>``."""

_LITESTAR_400 = "Bad request syntax or unsupported method"


def operation_id(handler: HTTPRouteHandler, *_: Any) -> str:
    """Short, stable operation ids: the route function's name in camel case (``spendCredits``)."""
    first, *rest = handler.handler_name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def openapi_config() -> OpenAPIConfig:
    """Served at ``/schema`` (``/schema/openapi.json``, ``/schema/swagger``, ...)."""
    return OpenAPIConfig(
        title="Credit ledger",
        version="1.0.0",
        path="/schema",
        description=(
            "Customers buy credit top-ups through Stripe Checkout, internal services spend "
            "credits, auditors replay every cent. Every endpoint except the Stripe webhook "
            "and the health checks takes `Authorization: Bearer <token>`; a token's scope "
            "(`credits`, `ledger:write`, `ledger:audit`) decides what it may call. Errors "
            'answer `{"message": ...}`; validation errors add `errors`, one entry per field.'
        ),
        operation_id_creator=operation_id,
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A token from `ledger tokens create`.",
                )
            }
        ),
    )


# --- error answers -------------------------------------------------------------------------


_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: (
        "The delivery is not a verifiable Stripe event; nothing was recorded.",
        {"message": "Invalid Stripe webhook: missing Stripe-Signature header."},
    ),
    401: ("No token, or an unknown or revoked one.", {"message": "Unauthenticated."}),
    402: ("The balance is short; nothing was recorded.", {"message": "Insufficient credits."}),
    403: (
        "The token's scope does not allow this.",
        {"message": "This action is unauthorized."},
    ),
    404: ("No such account.", {"message": "Account not found."}),
    409: (
        "The request conflicts with the ledger's state.",
        {"message": "The account already exists."},
    ),
    413: ("The body is larger than 256 KiB.", {"message": "The request body is too large."}),
    502: (
        "The payment provider failed; nothing was charged or recorded.",
        {
            "message": "The payment provider could not create the checkout. Nothing was "
            "charged or recorded; please try again."
        },
    ),
    503: (
        "The database is unavailable, or the account stayed busy with other writes; "
        "retry after `Retry-After` seconds. Nothing was recorded, or a retry with the "
        "same idempotency key returns the first answer.",
        {"message": "The ledger's database is unavailable; please retry."},
    ),
}

_VALIDATION_EXAMPLE = {
    "message": "The credits must be at least 100.",
    "errors": {"credits": ["The credits must be at least 100."]},
}


def errors(*codes: int, conflict: str | None = None) -> dict[int, ResponseSpec]:
    """The error answers ``codes`` for a route decorator's ``responses``."""
    specs: dict[int, ResponseSpec] = {}
    for code in codes:
        if code == 422:
            specs[code] = ResponseSpec(
                ValidationErrorBody,
                description="A field is missing or invalid; nothing was recorded.",
                generate_examples=False,
                examples=[Example(summary="a bad field", value=_VALIDATION_EXAMPLE)],
            )
            continue
        description, example = _ERRORS[code]
        if code == 409 and conflict:
            description, example = conflict, {"message": conflict}
        specs[code] = ResponseSpec(
            ErrorBody,
            description=description,
            generate_examples=False,
            examples=[Example(summary=description, value=example)],
        )
    return specs


def conform(document: OpenAPI) -> None:
    """Make the generated document say what this API answers.

    Litestar documents a 400 for every route with parameters (its own parameter
    errors); this API answers those 422 in the contract's shape, and each route
    lists its 422 itself. Only the Stripe webhook answers 400.
    """
    for item in (document.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            default = (operation.responses or {}).get("400") if operation else None
            if isinstance(default, OpenAPIResponse) and default.description == _LITESTAR_400:
                del operation.responses["400"]  # type: ignore[union-attr]


CREDITS_EXAMPLE = {
    "account_id": "acct_42",
    "balance": 1500,
    "monthly_allowance": 1000,
    "allowance_remaining": 500,
    "topup_balance": 1000,
    "period": "2026-12",
    "held": 200,
    "available": 1300,
}
"""An account's credits, as ``GET /v1/credits`` answers them."""


def example(summary: str, value: Any) -> Example:
    """One named example of a body, for ``Body(examples=[...])``."""
    return Example(summary=summary, value=value)

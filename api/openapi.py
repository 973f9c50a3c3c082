"""The OpenAPI document's extras: request bodies of hand-checked routes, error answers, auth.

Routes that take a JSON body read and check it themselves (``api.validation``), so
that every bad field gets the contract's 422 wording; Litestar therefore sees no
``data`` parameter and would document no body. ``documented()`` gives such a route
an OpenAPI operation that describes its body with a msgspec Struct written for the
document alone: the Struct never parses a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

import msgspec
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPIMediaType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)

from ledger.domain.account import ACCOUNT_ID_PATTERN

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
"""The ``security`` of every route that takes ``Authorization: Bearer <token>``."""

_LITESTAR_DEFAULT_400 = "Bad request syntax or unsupported method"


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


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error answer: what went wrong, in a sentence."""

    message: str


class ValidationErrorBody(msgspec.Struct, frozen=True):
    """422: the first message, and every bad field's messages."""

    message: str
    errors: dict[str, list[str]]


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


# --- request bodies --------------------------------------------------------------------------


def _json_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The Struct's JSON Schema, inline (documentation bodies are flat: no references)."""
    _, components = msgspec.json.schema_components([struct], ref_template="#/components/{name}")
    schema = components[struct.__name__]
    if "$ref" in msgspec.json.encode(schema).decode():
        raise TypeError(f"{struct.__name__} must be flat to be documented inline")
    return cast(dict[str, Any], schema)


def documented(
    body: type[msgspec.Struct] | None = None,
    *,
    examples: dict[str, Any] | None = None,
    body_required: bool = True,
    answer: Any = None,
    required_headers: tuple[str, ...] = (),
) -> type[Operation]:
    """An ``operation_class`` that documents a hand-read JSON ``body`` and an ``answer`` example.

    ``required_headers`` are documented as required although the handler takes them
    as optional, to answer their absence with its own 422 (or 400) wording. It also
    drops the 400 Litestar documents for every route with parameters: this API
    answers parameter errors 422, which the route lists itself.
    """
    request_body = None
    if body is not None:
        request_body = RequestBody(
            required=body_required,
            content={
                "application/json": OpenAPIMediaType(
                    # msgspec's JSON Schema, as is: the document is JSON Schema 2020-12 (OpenAPI 3.1).
                    schema=cast(Schema, _json_schema(body)),
                    examples={
                        name: Example(summary=name, value=value)
                        for name, value in (examples or {}).items()
                    }
                    or None,
                )
            },
        )

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if request_body is not None:
                self.request_body = request_body
            for parameter in self.parameters or []:
                if getattr(parameter, "name", None) in required_headers:
                    parameter.required = True  # type: ignore[union-attr]
            responses = self.responses or {}
            default_400 = responses.get("400")
            if default_400 is not None and default_400.description == _LITESTAR_DEFAULT_400:  # type: ignore[union-attr]
                del responses["400"]
            if answer is not None:
                for status, response in responses.items():
                    content = getattr(response, "content", None)
                    if status.startswith("2") and content:
                        for media in content.values():
                            media.examples = {"answer": Example(summary="answer", value=answer)}

        def to_schema(self) -> dict[str, Any]:
            # Litestar leaves out every None it meets, also inside example values, where
            # a null is meant ({"next_after": null}): put the examples back as written.
            result = super().to_schema()
            body_examples = (
                result.get("requestBody", {}).get("content", {}).get("application/json", {})
            ).get("examples", {})
            for name, value in (examples or {}).items():
                if name in body_examples:
                    body_examples[name]["value"] = value
            for status, response in result.get("responses", {}).items():
                for media in response.get("content", {}).values() if status.startswith("2") else []:
                    if "answer" in media.get("examples", {}):
                        media["examples"]["answer"]["value"] = answer
            return result

    return DocumentedOperation


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

AccountId = Annotated[
    str,
    msgspec.Meta(
        max_length=100,
        pattern=f"^{ACCOUNT_ID_PATTERN}$",
        description="Letters, digits and `_ . : -`, starting with a letter or digit.",
        examples=["acct_42"],
    ),
]


class PurchaseRequest(msgspec.Struct, frozen=True):
    """Buy top-up credits: they are added when the Checkout is paid.

    Integers are JSON integers here and below: ``1000``, never ``1000.0`` or ``"1000"``.
    """

    credits: Annotated[int, msgspec.Meta(ge=100, le=10_000, examples=[1000])]


class OpenAccountRequest(msgspec.Struct, frozen=True):
    """Open an account; ``monthly_allowance`` defaults to ``DEFAULT_MONTHLY_ALLOWANCE``."""

    account_id: AccountId
    monthly_allowance: (
        Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000, examples=[5000])] | None
    ) = None


class SpendRequest(msgspec.Struct, frozen=True):
    """Spend ``amount`` credits: the allowance first, then top-ups."""

    amount: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000_000, examples=[25])]
    reason: Annotated[str, msgspec.Meta(max_length=500, examples=["image generation"])] | None = (
        None
    )


class PlaceHoldRequest(msgspec.Struct, frozen=True):
    """Reserve ``amount`` credits until captured, released or expired."""

    amount: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000_000, examples=[300])]
    expires_in_seconds: Annotated[int, msgspec.Meta(ge=1, le=604_800, examples=[900])] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=500, examples=["video render"])] | None = None


class CaptureHoldRequest(msgspec.Struct, frozen=True):
    """Spend ``amount`` of the hold (at most what it holds); the rest goes back."""

    amount: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000_000, examples=[250])]


class MonthlyResetRequest(msgspec.Struct, frozen=True):
    """Reset the allowance for ``period`` (default: the current UTC month)."""

    period: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
                description="The billing period, `YYYY-MM`.",
                examples=["2026-12"],
            ),
        ]
        | None
    ) = None


class ChangePlanRequest(msgspec.Struct, frozen=True):
    """The monthly allowance from the next reset on."""

    monthly_allowance: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000, examples=[8000])]


class StripeEvent(msgspec.Struct, frozen=True):
    """A Stripe event, exactly as Stripe sent it (verified on the raw bytes)."""

    id: Annotated[str, msgspec.Meta(examples=["evt_1QEXAMPLE"])]
    type: Annotated[str, msgspec.Meta(examples=["checkout.session.completed"])]
    data: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="`object` is the Checkout session, charge or dispute the event is about.",
            extra_json_schema={
                "required": ["object"],
                "properties": {
                    "object": {
                        "type": "object",
                        "required": ["id"],
                        "properties": {"id": {"type": "string", "minLength": 1}},
                    }
                },
            },
        ),
    ]


class WebhookReceived(msgspec.Struct, frozen=True):
    """The webhook's answer to every verified event, handled or not."""

    received: bool

"""The OpenAPI document: its configuration, the error answers each route lists, and auth.

Request bodies and answers are documented by Litestar from the Structs routes
take and return (api/schemas.py).
"""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

import msgspec
from litestar import Litestar
from litestar.datastructures import ResponseHeader
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from api.body_headers import ENCODED
from api.docs_ui import SwaggerPage
from api.edge import IDEMPOTENT_REPLAYED, REQUEST_ID_HEADER
from api.errors import ACCOUNT_NOT_FOUND, GRANT_NOT_FOUND, HOLD_NOT_FOUND, NOT_FOUND
from api.read_side import (
    MAX_MIN_POSITION,
    MIN_POSITION_DIGITS,
    MIN_POSITION_HEADER,
    POSITION_HEADER,
    READ_FROM_HEADER,
    VIEWS_BEHIND_HEADER,
)
from api.schemas import ErrorBody, ValidationErrorBody
from api.validation import Body, OptionalBody, RawBody, field_errors
from ledger.store.claims import KEY_REUSED

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
"""The ``security`` of every route that takes ``Authorization: Bearer <token>``."""

_LITESTAR_400 = "Bad request syntax or unsupported method"


def operation_id(handler: HTTPRouteHandler, *_: Any) -> str:
    """Short, stable operation ids: the route function's name in camel case (``spendCredits``)."""
    first, *rest = handler.handler_name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def openapi_config() -> OpenAPIConfig:
    """The document at ``/schema/openapi.json`` (and ``.yaml``), shown at ``/schema`` by
    Swagger UI from the service's own files (api/docs_ui.py)."""
    return OpenAPIConfig(
        title="Credit ledger",
        version="1.0.0",
        path="/schema",
        render_plugins=[SwaggerPage(), JsonRenderPlugin(), YamlRenderPlugin()],
        description=(
            "Customers buy credit top-ups through Stripe Checkout, internal services spend "
            "credits, auditors replay every cent. Every endpoint except the Stripe webhook "
            "and the health checks takes `Authorization: Bearer <token>`; a token's scope "
            "(`credits`, `ledger:write`, `ledger:audit`) decides what it may call. Errors "
            'answer `{"message": ...}`; validation errors add `errors`, one entry per field.'
        ),
        operation_id_creator=operation_id,
        # Each route's docstring is written for the API's readers: the page shows it.
        use_handler_docstrings=True,
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
    404: ("No such account.", {"message": ACCOUNT_NOT_FOUND}),
    409: (
        "The request conflicts with the ledger's state.",
        {"message": "The account already exists."},
    ),
    413: ("The body is larger than 256 KiB.", {"message": "The request body is too large."}),
    415: (
        "The body is compressed (any `Content-Encoding`, or a `Transfer-Encoding` other "
        "than chunked); nothing was recorded.",
        {"message": ENCODED},
    ),
    502: (
        "The payment provider failed, or made the checkout for another amount than the "
        "credits cost (it was cancelled); nothing was charged or recorded. A retry with the "
        "same idempotency key asks the payment provider again.",
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


_GENERIC_422 = "a bad field"

WRITE_ERRORS = (401, 403, 413, 415, 422, 503)
"""What every command with a body may answer, whatever it does: no token or an unknown one,
a scope that does not allow it, a body too large, compressed or invalid, the database
unavailable or the account busy. ``write_errors`` adds each route's own."""


def write_errors(
    *own: int,
    conflict: str | None = None,
    invalid: dict[str, dict[str, str]] | None = None,
    on_account: str | None = None,
) -> dict[int, ResponseSpec]:
    """``errors`` of a command with a body: ``WRITE_ERRORS`` and its ``own`` (402, 404,
    409, 502), in the order of their codes."""
    return errors(
        *sorted({*WRITE_ERRORS, *own}), conflict=conflict, invalid=invalid, on_account=on_account
    )


_ON_ACCOUNT_NOT_FOUND = {"hold": HOLD_NOT_FOUND, "grant": GRANT_NOT_FOUND}
"""What a route whose path names a hold or a grant of the account answers when it has none."""


def errors(
    *codes: int,
    conflict: str | None = None,
    not_found: str | None = None,
    invalid: dict[str, dict[str, str]] | None = None,
    on_account: str | None = None,
) -> dict[int, ResponseSpec]:
    """The error answers ``codes`` for a route decorator's ``responses``.

    ``conflict`` words the 409; ``not_found`` the 404 of a route whose 404 is no account's
    (its answer ``NOT_FOUND``); ``on_account`` ("hold", "grant") the 404 of a route whose
    path names one of the account's: no account, or none of those on it, each its own
    answer; ``invalid`` adds the route's own 422 refusals that no schema shows (``{"a
    capture above the hold": {"amount": "The amount must ..."}}``).
    """
    specs: dict[int, ResponseSpec] = {}
    for code in codes:
        if code == 422:
            own = [
                Example(summary=summary, value=_refusal(*next(iter(fields.items()))))
                for summary, fields in (invalid or {}).items()
            ]
            specs[code] = ResponseSpec(
                ValidationErrorBody,
                description="A field is missing or invalid; nothing was recorded.",
                generate_examples=False,
                examples=own or [Example(summary=_GENERIC_422, value=_VALIDATION_EXAMPLE)],
            )
            continue
        description, example = _ERRORS[code]
        if code == 409 and conflict:
            description, example = conflict, {"message": conflict}
        elif code == 404 and not_found:
            description, example = not_found, {"message": NOT_FOUND}
        elif code == 404 and on_account:
            description = f"No such account, or no such {on_account} on it."
            specs[code] = ResponseSpec(
                ErrorBody,
                description=description,
                generate_examples=False,
                examples=[
                    Example(summary="No such account.", value={"message": ACCOUNT_NOT_FOUND}),
                    Example(
                        summary=f"No such {on_account} on the account.",
                        value={"message": _ON_ACCOUNT_NOT_FOUND[on_account]},
                    ),
                ],
            )
            continue
        specs[code] = ResponseSpec(
            ErrorBody,
            description=description,
            generate_examples=False,
            examples=[Example(summary=description, value=example)],
        )
    return specs


_METHODS = ("get", "put", "post", "delete", "patch")

_REPLAYING = frozenset({"Idempotency-Key", "Stripe-Signature"})
"""Request headers of the operations that can answer a replay: an idempotency key, or a
Stripe event (deduplicated by its id)."""

_HEADERS = {
    "401": {
        "WWW-Authenticate": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING, enum=["Bearer"]),
            required=True,
            description="The scheme to authenticate with (RFC 9110): a bearer token.",
        )
    },
    "503": {
        "Retry-After": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
            required=True,
            description="Seconds to wait before retrying.",
        )
    },
}

IDEMPOTENT_REPLAYED_HEADER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
    required=False,
    description=(
        f"`true` when this is the answer recorded for an earlier request (the same "
        f"`Idempotency-Key` and request again, or a Stripe event delivered again), given "
        f"again rather than decided now; absent on a first answer. As Stripe's "
        f"`{IDEMPOTENT_REPLAYED}`."
    ),
)


# --- the edge's headers (api/edge.py, api/read_side.py) -------------------------------------
# Documentation only: the edge sets them, once for every request, and Litestar's answers
# carry none of these (its response handlers drop documentation-only headers when built).

COMMAND_HEADERS = [
    ResponseHeader(
        name=POSITION_HEADER,
        documentation_only=True,
        description=(
            "The position in the event store this answer stands at: its last event's, or "
            "the head's for an answer that wrote nothing (a replay, a reset already done). "
            f"Send it back as `{MIN_POSITION_HEADER}` on a read to see this write."
        ),
    )
]
"""``response_headers`` of a command's route: its answer carries ``Ledger-Position``."""

VIEW_READ_HEADERS = [
    ResponseHeader(
        name=READ_FROM_HEADER,
        documentation_only=True,
        description=(
            "Where this read was answered from: `standby` (`DATABASE_READ_URL`) or `primary`."
        ),
    ),
    ResponseHeader(
        name=VIEWS_BEHIND_HEADER,
        documentation_only=True,
        description=(
            "`true` when this answer was read from views that had not applied what the read "
            f"waited for (its `{MIN_POSITION_HEADER}`, or the account's last write) within a "
            "second: the projector is stopped or behind, and the answer may lack the latest "
            "events. Absent otherwise (a balance is then read from the write side instead)."
        ),
    ),
]
"""``response_headers`` of a read of the views (or of the event feeds) routed by
api/read_side.py: its answer carries ``Ledger-Read-From``, and it reads
``Ledger-Min-Position`` (``conform`` adds that parameter to these)."""

_EDGE_SCHEMAS = {
    POSITION_HEADER: Schema(type=OpenAPIType.INTEGER, minimum=0),
    READ_FROM_HEADER: Schema(type=OpenAPIType.STRING, enum=["standby", "primary"]),
    VIEWS_BEHIND_HEADER: Schema(type=OpenAPIType.STRING, enum=["true"]),
}
"""Schemas of the documentation-only headers (Litestar gives one only from a value)."""

REQUEST_ID_ANSWERED = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING),
    required=True,
    description=(
        f"The request's id, on every log line of the request: the `{REQUEST_ID_HEADER}` it "
        "sent if that is 1 to 100 of `A-Z a-z 0-9 . _ : -`, else a new one."
    ),
)

REQUEST_ID_PARAMETER = Parameter(
    name=REQUEST_ID_HEADER,
    param_in=ParamType.HEADER,
    required=False,
    schema=Schema(type=OpenAPIType.STRING),
    description=(
        "An id for this request, to find it in the service's logs; echoed on the answer. "
        "One that is not 1 to 100 of `A-Z a-z 0-9 . _ : -` is replaced by a new one."
    ),
)

MIN_POSITION_PARAMETER = Parameter(
    name=MIN_POSITION_HEADER,
    param_in=ParamType.HEADER,
    required=False,
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=MAX_MIN_POSITION),
    description=(
        f"A command answer's `{POSITION_HEADER}`: the read is answered from views that have "
        "applied it (waiting up to a second for the standby, then the primary). Anything "
        f"but one such position (up to {MIN_POSITION_DIGITS} digits) is 422."
    ),
)


def conform(app: Litestar) -> None:
    """Make the generated document say what this API answers.

    - Litestar documents a 400 for every route with parameters (its own parameter
      errors); this API answers those 422 in the contract's shape, and each route
      lists its 422 itself. Only the Stripe webhook answers 400.
    - 401 answers carry ``WWW-Authenticate``, 503 answers ``Retry-After``, and the
      answers of operations that replay carry ``Idempotent-Replayed``.
    - Every operation takes ``X-Request-Id`` and every answer carries it; the reads that
      answer ``Ledger-Read-From`` (``VIEW_READ_HEADERS``) take ``Ledger-Min-Position``.
    - A 422 shows what that route's own body refuses, in the words it answers with.
    """
    document = app.openapi_schema
    bodies = _body_models(app)
    for path, item in (document.paths or {}).items():
        for method in _METHODS:
            operation: Operation | None = getattr(item, method, None)
            if operation is None or not operation.responses:
                continue
            default = operation.responses.get("400")
            if isinstance(default, OpenAPIResponse) and default.description == _LITESTAR_400:
                del operation.responses["400"]
            headers = {
                parameter.name
                for parameter in operation.parameters or ()
                if isinstance(parameter, Parameter) and parameter.param_in == ParamType.HEADER
            }
            routed_read = False
            for status, response in operation.responses.items():
                if not isinstance(response, OpenAPIResponse):
                    continue
                for name, header in (response.headers or {}).items():
                    if name in _EDGE_SCHEMAS and isinstance(header, OpenAPIHeader):
                        header.schema = _EDGE_SCHEMAS[name]
                        routed_read = routed_read or name == READ_FROM_HEADER
                response.headers = {
                    **(response.headers or {}),
                    REQUEST_ID_HEADER: REQUEST_ID_ANSWERED,
                }
                if status in _HEADERS and response.description == _ERRORS[int(status)][0]:
                    response.headers = {**(response.headers or {}), **_HEADERS[status]}
                elif status.startswith("2") and headers & _REPLAYING:
                    replayed = {IDEMPOTENT_REPLAYED: IDEMPOTENT_REPLAYED_HEADER}
                    response.headers = {**(response.headers or {}), **replayed}
                elif status == "422" and response.content:
                    media = response.content["application/json"]
                    own = [
                        example
                        for example in (media.examples or {}).values()
                        if isinstance(example, Example) and example.summary != _GENERIC_422
                    ]
                    examples = _refusals(bodies.get((path, method)), headers, own)
                    if examples:
                        media.examples = examples
            taken = [MIN_POSITION_PARAMETER] if routed_read else []
            operation.parameters = [*(operation.parameters or ()), *taken, REQUEST_ID_PARAMETER]
            body = bodies.get((path, method))
            if body is not None and body[1] and isinstance(operation.request_body, RequestBody):
                operation.request_body.required = False  # OptionalBody: it may be left out


def _body_models(app: Litestar) -> dict[tuple[str, str], tuple[type[msgspec.Struct], bool]]:
    """The Struct each operation's JSON body is decoded into, and whether it may be left
    out (``OptionalBody``), by (path, method)."""
    models: dict[tuple[str, str], tuple[type[msgspec.Struct], bool]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            dto = handler.resolve_data_dto()
            if dto is None or not issubclass(dto, Body) or issubclass(dto, RawBody):
                continue
            for method in handler.http_methods:
                optional = issubclass(dto, OptionalBody)
                models[(route.path_format, method.lower())] = (dto.model_type, optional)
    return models


def _refusal(field: str, message: str) -> dict[str, Any]:
    return {"message": message, "errors": {field: [message]}}


def _refusals(
    body: tuple[type[msgspec.Struct], bool] | None, headers: set[str], own: list[Example]
) -> dict[str, Example | Reference]:
    """Examples of a route's 422, worded by the code that refuses (api/validation.py)."""
    found: dict[str, Example | Reference] = {}
    model = body[0] if body is not None else None

    def add(summary: str, field: str, message: str) -> None:
        found[f"refusal-{len(found) + 1}"] = Example(
            summary=summary, value=_refusal(field, message)
        )

    fields = msgspec.structs.fields(model) if model is not None else ()
    if missing := next((f.encode_name for f in fields if f.required), None):
        add(f"`{missing}` left out", missing, field_errors({}, model)[missing][0])  # type: ignore[arg-type]
    if whole := next((f.encode_name for f in fields if _integer(f.type)), None):
        message = field_errors({whole: 1517.0}, model)[whole][0]  # type: ignore[arg-type]
        add(f"`{whole}` written as 1517.0 (JSON integers only)", whole, message)
    if "Idempotency-Key" in headers:
        add("an Idempotency-Key already used for another request", "Idempotency-Key", KEY_REUSED)
    for example in own:
        found[f"refusal-{len(found) + 1}"] = example
    return found


def _integer(annotation: Any) -> bool:
    """Whether a field's type is ``int`` (or ``int | None``), constraints aside."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation is int or int in get_args(annotation)


def example(summary: str, value: Any) -> Example:
    """One named example of a body, for ``Body(examples=[...])``."""
    return Example(summary=summary, value=value)

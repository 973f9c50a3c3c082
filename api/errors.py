"""Domain and request errors to status codes, in the contract's JSON shape."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap, Receive, Scope, Send

from api.access.guards import Forbidden, Unauthenticated
from api.body_headers import UnsupportedBody
from api.database import PoolBusy
from api.metrics import MetricsAccess
from api.validation import (
    IDEMPOTENCY_KEY_INVALID,
    IDEMPOTENCY_KEY_MISSING,
    NOT_AN_OBJECT,
    OptionalBody,
    ValidationFailed,
    field_errors,
)
from ledger.adapters.stripe_webhooks import InvalidWebhook
from ledger.clock_guard import ClockSkewed
from ledger.domain.errors import (
    AccountAlreadyExists,
    AccountNotFound,
    CaptureExceedsHold,
    GrantClosed,
    GrantNotFound,
    HoldAlreadySettled,
    HoldHasExpired,
    HoldNotFound,
    InsufficientCredits,
    InvalidAccountId,
    InvalidAmount,
    InvalidGrant,
    InvalidPeriod,
    InvalidReason,
    PeriodOutOfOrder,
)
from ledger.ports import CheckoutMispriced, PaymentGatewayError
from ledger.store.claims import IdempotencyKeyReused
from ledger.store.event_store import ConcurrencyConflict, StoreBusy
from ledger.store.repository import UnreadableStream

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra: Any) -> Response[dict[str, Any]]:
    """``{"message": ...}`` plus any extra keys, as JSON."""
    return Response({"message": message, **extra}, status_code=status, media_type=MediaType.JSON)


def _validation(errors: dict[str, list[str]]) -> Response[dict[str, Any]]:
    failed = ValidationFailed(errors)
    return error_response(422, failed.message, errors=failed.errors)


def _fixed(status: int, message: str) -> Callable[[Request, Exception], Response[Any]]:
    def handler(_: Request, __: Exception) -> Response[Any]:
        return error_response(status, message)

    return handler


def _validation_failed(_: Request, error: ValidationFailed) -> Response[Any]:
    return _validation(error.errors)


SIGNED_BODY = "signed_body"
"""``opt`` key of a route whose body is verified against a signature (the Stripe webhook):
a request Litestar finds incomplete there is not a verifiable delivery (400), not a 422."""


def _litestar_validation(request: Request, error: ValidationException) -> Response[Any]:
    """Litestar's own checks of headers and the body's presence, in the contract's words."""
    if request.route_handler.opt.get(SIGNED_BODY):
        # The contract: a delivery that cannot be verified is 400 and nothing is recorded.
        missing = "Stripe-Signature header" if "Stripe-Signature" in str(error.detail) else "body"
        return _invalid_webhook(request, InvalidWebhook(f"missing {missing}"))
    if "Idempotency-Key" in str(error.detail):  # a required header left out
        return _validation({"Idempotency-Key": [IDEMPOTENCY_KEY_MISSING]})
    errors: dict[str, list[str]] = {}
    for item in error.extra if isinstance(error.extra, list) else []:
        if not isinstance(item, dict):
            continue
        field, source = str(item.get("key") or "request"), item.get("source")
        if field == "idempotency_key":
            errors["Idempotency-Key"] = [IDEMPOTENCY_KEY_INVALID]
        elif field == "data" and source == "body":
            if not _body_may_be_left_out(request):
                errors.update(_no_body(request))
        else:
            errors.setdefault(field, []).append(
                f"The {field} field is invalid: {item.get('message')}."
            )
    return _validation(errors or {"request": ["The request is invalid."]})


def _body_may_be_left_out(request: Request) -> bool:
    """Whether the route takes no body as well as one (``OptionalBody``). Its body, when
    sent, is decoded before Litestar looks (a bad one is our own 422); Litestar, listing
    every field of a route whose other field failed, counts the absent one as bad."""
    dto = request.route_handler.resolve_data_dto()
    return isinstance(dto, type) and issubclass(dto, OptionalBody)


def _no_body(request: Request) -> dict[str, list[str]]:
    """A request without a body is one without fields (as Laravel, whose words the contract
    uses, reads it): each required field is missing, in the contract's own message."""
    dto = request.route_handler.resolve_data_dto()
    model = getattr(dto, "model_type", None)
    missing = field_errors({}, model) if isinstance(model, type) else {}
    return missing or {"body": [NOT_AN_OBJECT]}


def _idempotency_key_reused(_: Request, error: IdempotencyKeyReused) -> Response[Any]:
    return _validation({"Idempotency-Key": [str(error)]})


def _invalid_amount(_: Request, error: InvalidAmount) -> Response[Any]:
    return _validation({"amount": [str(error)]})


def _invalid_account_id(_: Request, error: InvalidAccountId) -> Response[Any]:
    return _validation({"account_id": [str(error)]})


def _invalid_grant(_: Request, error: InvalidGrant) -> Response[Any]:
    field = "expires_at" if "expires_at" in str(error) else "grant"
    return _validation({field: [str(error)]})


def _invalid_reason(_: Request, error: InvalidReason) -> Response[Any]:
    return _validation({"reason": [str(error)]})


def _invalid_period(_: Request, error: InvalidPeriod) -> Response[Any]:
    return _validation({"period": [str(error)]})


def _conflict(_: Request, error: Exception) -> Response[Any]:
    return error_response(409, str(error))


def _capture_exceeds_hold(_: Request, error: CaptureExceedsHold) -> Response[Any]:
    return _validation(
        {"amount": [f"The amount must not be greater than the held amount. {error}"]}
    )


def _payment_gateway(_: Request, error: PaymentGatewayError) -> Response[Any]:
    if isinstance(error, CheckoutMispriced):
        return error_response(
            502,
            "The payment provider made the checkout for another amount than the credits "
            "cost; it was cancelled. Nothing was charged or recorded.",
        )
    return error_response(
        502,
        "The payment provider could not create the checkout. Nothing was charged or "
        "recorded; please try again.",
    )


def _invalid_webhook(_: Request, error: InvalidWebhook) -> Response[Any]:
    return error_response(400, f"Invalid Stripe webhook: {error}.")


def _unsupported_body(_: Request, error: UnsupportedBody) -> Response[Any]:
    return error_response(415, str(error))


def _retry_soon(message: str) -> Response[Any]:
    """A 503 with ``Retry-After: 1``: nothing was recorded, or a retry gets the first answer."""
    response = error_response(503, message)
    response.headers["Retry-After"] = "1"
    return response


def _busy(_: Request, error: ConcurrencyConflict) -> Response[Any]:
    # The access line has the route's template only: this one names the account.
    log.warning("account busy: %s", error)
    return _retry_soon("The account is busy with other writes; please retry.")


def _clock_skewed(_: Request, error: ClockSkewed) -> Response[Any]:
    # Not logged: the guard says when it starts and when it ends (ledger/clock_guard.py).
    return _retry_soon(
        f"The server's clock is {abs(error.offset):.1f} seconds "
        f"{'ahead of' if error.offset > 0 else 'behind'} the database's, more than the "
        f"{error.tolerance:g} allowed: it records nothing until its operator fixes its time "
        "synchronisation (NTP). Nothing was recorded; please retry (another server may take it)."
    )


def _still_writing(_: Request, __: StoreBusy) -> Response[Any]:
    return _retry_soon("Events recorded before that moment are still being written; please retry.")


def _unreadable_stream(_: Request, error: UnreadableStream) -> Response[Any]:
    # One line naming the row, not a traceback a request: every request on the stream
    # fails so until an operator repairs it.
    log.error("%s (see `ledger audit verify`)", error)
    return error_response(
        503,
        "The ledger cannot read the history this request needs; nothing was recorded. "
        "It stays unavailable until an operator repairs it.",
    )


def _database_unavailable(_: Request, error: Exception) -> Response[Any]:
    log.warning("database unavailable: %s", type(error).__name__)
    return _retry_soon("The ledger's database is unavailable; please retry.")


def _pool_busy(_: Request, error: PoolBusy) -> Response[Any]:
    log.warning("database busy: %s", error)
    return _retry_soon("The ledger is busy; please retry.")


def _unauthenticated(_: Request, __: Unauthenticated) -> Response[Any]:
    response = error_response(401, "Unauthenticated.")
    # RFC 9110 (11.6.1): a 401 names the scheme that would be accepted.
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


ACCOUNT_NOT_FOUND = "Account not found."
HOLD_NOT_FOUND = "Hold not found."
GRANT_NOT_FOUND = "Grant not found."
"""The 404s of a route's path: no such account, or no such hold or grant on it."""

NOT_FOUND = "Not found."
"""A 404 of no account, hold or grant: an unknown path or webhook endpoint, ``/metrics`` on a
port that does not serve it (api/openapi.py documents it where a route answers it)."""


def _http(request: Request, error: HTTPException) -> Response[Any]:
    if error.status_code == 405 and _path_served_elsewhere(request):
        error = NotFoundException()
    messages = {
        404: NOT_FOUND,
        405: "Method not allowed.",
        413: "The request body is too large.",
    }
    message = messages.get(error.status_code) or str(error.detail)
    response = error_response(error.status_code, message)
    if error.headers:
        # Litestar's 405 names the path's methods in ``Allow``, as RFC 9110 (15.5.6) requires.
        response.headers.update(error.headers)
    return response


def _path_served_elsewhere(request: Request) -> bool:
    """Whether the path of a method it does not take is one its port does not serve (a
    route of the API's on the metrics port): Litestar refuses the method while routing,
    before the middleware that answers such paths 404 runs."""
    access: MetricsAccess | None = request.app.state.get("metrics_access")
    path = request.scope["path"].rstrip("/") or "/"
    return access is not None and access.serves_elsewhere(request.scope, path)


def _unexpected(request: Request, error: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "Server Error.")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    Unauthenticated: _unauthenticated,
    Forbidden: _fixed(403, "This action is unauthorized."),
    ValidationFailed: _validation_failed,
    ValidationException: _litestar_validation,
    IdempotencyKeyReused: _idempotency_key_reused,
    InvalidAmount: _invalid_amount,
    InvalidAccountId: _invalid_account_id,
    InvalidPeriod: _invalid_period,
    InvalidReason: _invalid_reason,
    PeriodOutOfOrder: _conflict,
    HoldHasExpired: _conflict,
    HoldAlreadySettled: _conflict,
    CaptureExceedsHold: _capture_exceeds_hold,
    HoldNotFound: _fixed(404, HOLD_NOT_FOUND),
    InvalidGrant: _invalid_grant,
    GrantClosed: _conflict,
    GrantNotFound: _fixed(404, GRANT_NOT_FOUND),
    InsufficientCredits: _fixed(402, "Insufficient credits."),
    AccountNotFound: _fixed(404, ACCOUNT_NOT_FOUND),
    AccountAlreadyExists: _fixed(409, "The account already exists."),
    PaymentGatewayError: _payment_gateway,
    InvalidWebhook: _invalid_webhook,
    UnsupportedBody: _unsupported_body,
    ConcurrencyConflict: _busy,
    ClockSkewed: _clock_skewed,
    StoreBusy: _still_writing,
    UnreadableStream: _unreadable_stream,
    # A lost connection, a server that is starting or stopping, a pool that cannot connect.
    # A command whose commit was cut off is answered 503 too: retried with the same
    # idempotency key, it gets its first answer or is applied once.
    asyncpg.PostgresConnectionError: _database_unavailable,
    asyncpg.CannotConnectNowError: _database_unavailable,
    asyncpg.AdminShutdownError: _database_unavailable,
    asyncpg.InterfaceError: _database_unavailable,
    # A pooled connection the server cut off in the middle of an operation can fail its
    # next use this way ("cannot switch to state ..."); seen while PostgreSQL restarted.
    asyncpg.InternalClientError: _database_unavailable,
    # A new connection the server refuses: its database was dropped or renamed, or its role
    # may no longer log in (a password rotated): unavailable until an operator sets it right.
    asyncpg.InvalidCatalogNameError: _database_unavailable,
    asyncpg.InvalidAuthorizationSpecificationError: _database_unavailable,
    # The server is out of connections or memory, or one of the service's timeouts ended
    # a wait (lock_timeout, statement_timeout): nothing was committed, a retry may pass.
    asyncpg.InsufficientResourcesError: _database_unavailable,
    asyncpg.LockNotAvailableError: _database_unavailable,
    asyncpg.QueryCanceledError: _database_unavailable,
    # Every pooled connection taken for longer than the API waits for one (api/database.py).
    PoolBusy: _pool_busy,
    ConnectionError: _database_unavailable,
    # A server that takes the connection and never answers (frozen, or a network that
    # drops its packets): the pool's connect ends after CONNECT_TIMEOUT (api/database.py).
    TimeoutError: _database_unavailable,
    HTTPException: _http,
    Exception: _unexpected,
}


async def send_error(scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
    """Answer ``error`` as the app's exception handlers do (the express lane's errors)."""
    handler = next(EXCEPTION_HANDLERS[k] for k in type(error).__mro__ if k in EXCEPTION_HANDLERS)
    request: Request[Any, Any, Any] = Request(scope, receive, send)
    response = handler(request, error)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)

"""The Litestar app factory of the Stripe stand-in."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import MutableScopeHeaders, State
from litestar.exceptions import HTTPException
from litestar.types import Message, Scope

from stripe_standin.api import make_api_router
from stripe_standin.api_payments import make_payments_router
from stripe_standin.control import drop_connections, make_control_router
from stripe_standin.errors import StripeError
from stripe_standin.expiry import DEFAULT_CHECK_SECONDS, ExpirySweeper
from stripe_standin.hosted import make_hosted_router
from stripe_standin.persistence import read_state_file, restore, save_state
from stripe_standin.state import StandinState, error_response, json_response, request_id
from stripe_standin.validate import MIN_EXPIRY_SECONDS
from stripe_standin.webhooks import DEFAULT_RETRY_DELAYS, Webhooks

logger = logging.getLogger(__name__)


async def _add_request_id(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start":
        MutableScopeHeaders.from_message(message)["Request-Id"] = request_id(scope)


def _is_api(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith("/v1/") or request.url.path == "/v1"


def _stripe_error(_: Request[Any, Any, Any], exc: StripeError) -> Response[bytes]:
    return error_response(exc)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if _is_api(request) and exc.status_code in (404, 405):
        return error_response(
            StripeError(
                404,
                f"Unrecognized request URL ({request.method}: {request.url.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            )
        )
    if _is_api(request):
        return error_response(StripeError(exc.status_code, exc.detail))
    return json_response(
        {"status_code": exc.status_code, "detail": exc.detail}, exc.status_code, exc.headers
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    logger.exception("stripe stand-in failed on %s %s", request.method, request.url.path)
    return error_response(StripeError(500, f"Stand-in internal error: {exc!r}", type_="api_error"))


def create_standin_app(
    *,
    public_base_url: str,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    state_file: Path | None = None,
    expiry_check_seconds: float = DEFAULT_CHECK_SECONDS,
    min_expiry_seconds: int = MIN_EXPIRY_SECONDS,
) -> Litestar:
    """A Stripe stand-in reachable at ``public_base_url`` (used for hosted-page URLs).

    Events go to ``webhook_url`` signed with ``webhook_secret`` (change both later with
    ``get_state(app).webhooks.configure``); failed deliveries are retried after each of
    ``webhook_retry_delays`` seconds.

    ``state_file``: load the state from it (if it exists) and write it back after every
    change; a ``webhook_url`` or ``webhook_secret`` given here replaces the stored endpoint.
    Open sessions expire every ``expiry_check_seconds``. ``min_expiry_seconds`` below
    Stripe's 30 minutes lets tests create sessions that expire soon.
    """
    webhooks = Webhooks(webhook_url, webhook_secret, webhook_retry_delays)
    state = StandinState(
        public_base_url=public_base_url.rstrip("/"),
        webhooks=webhooks,
        min_expiry_seconds=min_expiry_seconds,
    )
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        stored = read_state_file(state_file)
        if stored is not None:
            restore(state, stored)
            if webhook_url is None and webhook_secret is None:
                webhooks.url, webhooks.secret = stored.webhooks.url, stored.webhooks.secret
        state.saver = partial(save_state, path=state_file)
        webhooks.on_change = state.changed
        state.changed()  # the file exists (and has this run's address) from the start
    sweeper = ExpirySweeper(state, expiry_check_seconds)
    return Litestar(
        route_handlers=[
            make_api_router(),
            make_payments_router(),
            make_hosted_router(),
            make_control_router(),
        ],
        state=State({"standin": state}),
        on_startup=[webhooks.start, sweeper.start],
        on_shutdown=[sweeper.stop, webhooks.stop],
        before_send=[_add_request_id],
        middleware=[drop_connections],
        exception_handlers={
            StripeError: _stripe_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        openapi_config=None,
        logging_config=None,  # a library app must not reconfigure the host process's logging
    )

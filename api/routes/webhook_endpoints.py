"""Notification routes for internal services (scope ``ledger:write``).

Webhook endpoints (subscribe, list, disable) and each account's low-balance
threshold, which decides when ``credits.low_balance`` fires.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, delete, get, post, put
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from api.access.guards import Caller, require_scope
from api.access.tokens import Scope
from api.openapi import BEARER, documented, errors
from api.services import ServicesDependency
from api.validation import Checker, json_object
from ledger.commands import SetLowBalanceThreshold
from ledger.notifications import EVENT_TYPES
from ledger.notifications.endpoints import CreatedEndpoint, EndpointRegistry, WebhookEndpoint

MAX_URL_LENGTH = 2048
MAX_THRESHOLD = 1_000_000_000_000
URL_PATTERN = r"https?://[A-Za-z0-9._~-]+(:[0-9]{1,5})?([/?#][\x21-\x7e]*)?"
"""http or https, a host name or address, an optional port, then printable ASCII."""

EventType = Literal[
    "credits.purchased", "credits.spent", "credits.low_balance", "credits.depleted", "hold.expired"
]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]


class WebhookEndpointRequest(msgspec.Struct, frozen=True):
    """Subscribe ``url`` to notification types (documentation only; read by hand)."""

    url: Annotated[
        str,
        msgspec.Meta(
            max_length=MAX_URL_LENGTH,
            pattern=f"^{URL_PATTERN}$",
            examples=["https://billing.internal.example/ledger-hooks"],
        ),
    ]
    events: Annotated[list[EventType], msgspec.Meta(min_length=1)]


class ThresholdRequest(msgspec.Struct, frozen=True):
    """The account's own low-balance threshold, or null for 10 % of its monthly allowance."""

    threshold: Annotated[int, msgspec.Meta(ge=0, le=MAX_THRESHOLD, examples=[500])] | None


def _url(checker: Checker) -> str | None:
    url = checker.string("url", max_length=MAX_URL_LENGTH)
    if url is not None and not re.fullmatch(URL_PATTERN, url):
        checker.fail("url", "The url field must be a valid URL (http or https).")
    return url


def _event_types(checker: Checker) -> list[str]:
    events = checker.data.get("events")
    if events is None or events == []:
        checker.fail("events", "The events field is required.")
        return []
    if not isinstance(events, list):
        checker.fail("events", "The events field must be an array.")
        return []
    for index, event_type in enumerate(events):
        if event_type not in EVENT_TYPES:
            checker.fail(
                f"events.{index}",
                f"The selected events.{index} is invalid. Choose from {', '.join(EVENT_TYPES)}.",
            )
    return list(dict.fromkeys(e for e in events if e in EVENT_TYPES))


_ENDPOINT_EXAMPLE = {
    "id": "we_3f9c2a7d51e04b8c9a6d2f10",
    "url": "https://billing.internal.example/ledger-hooks",
    "events": ["credits.low_balance", "credits.depleted"],
    "created": "2026-12-01T09:30:00.000000Z",
}


@post(
    "/v1/webhook-endpoints",
    status_code=201,
    tags=["notifications"],
    security=BEARER,
    responses=errors(401, 403, 413, 422, 503),
    operation_class=documented(
        WebhookEndpointRequest,
        examples={
            "alerts": {
                "url": "https://billing.internal.example/ledger-hooks",
                "events": ["credits.low_balance", "credits.depleted"],
            }
        },
        answer={**_ENDPOINT_EXAMPLE, "secret": "whsec_…"},
    ),
)
async def create_webhook_endpoint(
    request: Request, principal: Caller, services: ServicesDependency
) -> CreatedEndpoint:
    """Subscribe a URL to notification types; the answer holds its signing secret, shown once."""
    require_scope(principal, Scope.LEDGER_WRITE)
    checker = Checker(json_object(await request.body()))
    url = _url(checker)
    events = _event_types(checker)
    checker.done()
    assert url is not None
    return await EndpointRegistry(services.pool).create(url, events)


@get(
    "/v1/webhook-endpoints",
    tags=["notifications"],
    security=BEARER,
    responses=errors(401, 403, 503),
    operation_class=documented(answer=[{**_ENDPOINT_EXAMPLE, "disabled": None}]),
)
async def list_webhook_endpoints(
    principal: Caller, services: ServicesDependency
) -> list[WebhookEndpoint]:
    """The live endpoints, oldest first, without their secrets."""
    require_scope(principal, Scope.LEDGER_WRITE)
    return await EndpointRegistry(services.pool).list()


@delete(
    "/v1/webhook-endpoints/{endpoint_id:str}",
    status_code=200,
    tags=["notifications"],
    security=BEARER,
    responses=errors(401, 403, 404, 503),
    operation_class=documented(answer={**_ENDPOINT_EXAMPLE, "disabled": "2026-12-02T10:00:00Z"}),
)
async def disable_webhook_endpoint(
    endpoint_id: FromPath[str], principal: Caller, services: ServicesDependency
) -> WebhookEndpoint:
    """Stop delivering to an endpoint (kept on record, with its deliveries, as disabled)."""
    require_scope(principal, Scope.LEDGER_WRITE)
    disabled = await EndpointRegistry(services.pool).disable(endpoint_id)
    if disabled is None:
        raise NotFoundException
    return disabled


class LowBalanceThreshold(msgspec.Struct, frozen=True):
    """When ``credits.low_balance`` fires for an account.

    ``threshold`` is the account's own setting (null: the default);
    ``effective_threshold`` is what applies now (the default is 10 % of the
    monthly allowance, rounded down).
    """

    account_id: str
    threshold: int | None
    effective_threshold: int


@put(
    "/v1/accounts/{account_id:str}/low-balance-threshold",
    status_code=200,
    tags=["notifications"],
    security=BEARER,
    responses=errors(401, 403, 404, 413, 422, 503),
    operation_class=documented(
        ThresholdRequest,
        examples={"its own": {"threshold": 500}, "the default": {"threshold": None}},
        answer={"account_id": "acct_42", "threshold": 500, "effective_threshold": 500},
    ),
)
async def set_low_balance_threshold(
    account_id: FromPath[str], request: Request, principal: Caller, services: ServicesDependency
) -> LowBalanceThreshold:
    """Set the account's low-balance threshold: an integer, or null for the default."""
    require_scope(principal, Scope.LEDGER_WRITE)
    data: dict[str, Any] = json_object(await request.body())
    checker = Checker(data)
    threshold: int | None = None
    if "threshold" not in data:
        checker.fail("threshold", "The threshold field must be present.")
    elif data["threshold"] is not None:
        threshold = checker.integer("threshold", minimum=0, maximum=MAX_THRESHOLD)
    checker.done()
    account = await services.ledger.execute(
        SetLowBalanceThreshold(account_id=account_id, threshold=threshold)
    )
    return LowBalanceThreshold(
        account_id=account.account_id,
        threshold=account.low_balance_threshold,
        effective_threshold=account.effective_low_balance_threshold,
    )


ROUTES = [
    create_webhook_endpoint,
    list_webhook_endpoints,
    disable_webhook_endpoint,
    set_low_balance_threshold,
]

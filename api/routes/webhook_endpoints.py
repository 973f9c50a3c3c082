"""Notification routes for internal services (scope ``ledger:write``).

Webhook endpoints (subscribe, list, disable) and each account's low-balance
threshold, which decides when ``credits.low_balance`` fires.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, delete, get, post, put
from litestar.exceptions import NotFoundException
from litestar.params import Body as Documented
from litestar.params import FromPath

from api.access.guards import Caller, allow
from api.access.tokens import Scope
from api.dependencies import ServicesDependency
from api.openapi import BEARER, COMMAND_HEADERS, errors, example, write_errors
from api.pagination import After, Limit, page, page_of_rows
from api.schemas import LowBalanceThreshold, ThresholdRequest, WebhookEndpointRequest
from api.validation import Body, OptionalIdempotencyKey, ValidationFailed
from ledger.commands import SetLowBalanceThreshold
from ledger.notifications.addresses import NonPublicAddress, UnresolvableHost
from ledger.notifications.endpoints import (
    CreatedEndpoint,
    EndpointRegistry,
    MalformedURL,
    PlainTextURL,
    WebhookEndpoint,
)


class WebhookEndpoints(msgspec.Struct, frozen=True):
    """A page of the live endpoints, oldest first."""

    data: list[WebhookEndpoint]
    has_more: bool
    next_after: int | None


@post(
    "/v1/webhook-endpoints",
    status_code=201,
    dto=Body[WebhookEndpointRequest],
    return_dto=None,
    responses=write_errors(),
)
async def create_webhook_endpoint(
    data: Annotated[
        WebhookEndpointRequest,
        Documented(
            examples=[
                example(
                    "alerts",
                    {
                        "url": "https://billing.internal.example/ledger-hooks",
                        "events": ["credits.low_balance", "credits.depleted"],
                    },
                )
            ]
        ),
    ],
    principal: Caller,
    services: ServicesDependency,
    idempotency_key: OptionalIdempotencyKey = None,
) -> CreatedEndpoint:
    """Subscribe a URL to notification types; the answer holds its signing secret, shown once
    (and again only to a repeat under the same optional ``Idempotency-Key``, from the same
    token).

    The URL's host must be a public address (resolved now, and again at each delivery); in
    production the URL must be ``https://`` unless its host is this machine.
    """
    url = stored_url(data.url)
    registry = EndpointRegistry(
        services.pool,
        allow_private=services.webhook_allow_private,
        https_only=services.webhook_https_only,
    )
    try:
        return await registry.create(
            url,
            list(dict.fromkeys(data.events)),
            idempotency_key=idempotency_key,
            maker=principal.token_id,
        )
    except NonPublicAddress as refused:
        raise ValidationFailed.single(
            "url", f"The url must be on a public address: {refused}{PRIVATE_HINT}"
        ) from None
    except MalformedURL:  # the body's pattern refused it already; the registry's own check
        raise ValidationFailed.single(
            "url", "The url field must be a valid URL (http or https)."
        ) from None
    except PlainTextURL:
        raise ValidationFailed.single(
            "url",
            "The url must be https:// in production: a notification carries an account's "
            "balance, which its signature does not hide.",
        ) from None
    except UnresolvableHost as refused:
        raise ValidationFailed.single(
            "url", f"The url's host must resolve to a public address: {refused}."
        ) from None


def stored_url(url: str) -> str:
    """``url`` (which matched ``URL_PATTERN``) with its scheme in lower case, as it is stored
    and answered (RFC 3986: the scheme is case-insensitive, lower case its normal form)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}://{rest}"


PRIVATE_HINT = "; receivers on private networks need LEDGER_WEBHOOK_ALLOW_PRIVATE=1."
"""Said with a refused address: a developer's first receiver is on 127.0.0.1."""


@get("/v1/webhook-endpoints", responses=errors(401, 403, 422, 503))
async def list_webhook_endpoints(
    services: ServicesDependency, limit: Limit = None, after: After = None
) -> WebhookEndpoints:
    """The live endpoints, oldest first, without their secrets; ``after`` takes the last
    one's ``position``."""
    chosen = page(limit, after)
    found = await EndpointRegistry(services.reading).list(
        after=chosen.after, limit=chosen.limit + 1
    )
    return page_of_rows(WebhookEndpoints, found, chosen.limit)


@delete(
    "/v1/webhook-endpoints/{endpoint_id:str}",
    status_code=200,
    responses=errors(401, 403, 404, 503, not_found="No such webhook endpoint."),
)
async def disable_webhook_endpoint(
    endpoint_id: FromPath[str], services: ServicesDependency
) -> WebhookEndpoint:
    """Stop delivering to an endpoint (kept on record, with its deliveries, as disabled)."""
    disabled = await EndpointRegistry(services.pool).disable(endpoint_id)
    if disabled is None:
        raise NotFoundException
    return disabled


@put(
    "/v1/accounts/{account_id:str}/low-balance-threshold",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    dto=Body[ThresholdRequest],
    return_dto=None,
    responses=write_errors(404),
)
async def set_low_balance_threshold(
    account_id: FromPath[str],
    data: Annotated[
        ThresholdRequest,
        Documented(
            description='`{"threshold": null}` goes back to the default.',
            examples=[example("its own", {"threshold": 500})],
        ),
    ],
    services: ServicesDependency,
) -> LowBalanceThreshold:
    """Set the account's low-balance threshold: an integer, or null for the default."""
    account = await services.ledger.execute(
        SetLowBalanceThreshold(account_id=account_id, threshold=data.threshold)
    )
    return LowBalanceThreshold(
        account_id=account.account_id,
        threshold=account.low_balance_threshold,
        effective_threshold=account.effective_low_balance_threshold,
    )


NOTIFICATIONS = Router(
    "/",
    route_handlers=[
        create_webhook_endpoint,
        list_webhook_endpoints,
        disable_webhook_endpoint,
        set_low_balance_threshold,
    ],
    guards=[allow(Scope.LEDGER_WRITE)],
    security=BEARER,
    tags=["notifications"],
)

"""Stripe's webhook: verified on the raw body, applied exactly once."""

from __future__ import annotations

import logging
from typing import Annotated

from litestar import post
from litestar.openapi.spec import Example
from litestar.params import Body as Documented
from litestar.params import HeaderParameter

from api.log_context import stripe_event_id
from api.metrics import webhook_outcomes
from api.openapi import errors, example
from api.schemas import StripeEvent, WebhookReceived
from api.services import ServicesDependency
from api.validation import RawBody
from ledger.adapters.stripe_webhooks import InvalidWebhook, parse_event, verify_signature

log = logging.getLogger(__name__)

StripeSignature = Annotated[
    str,
    HeaderParameter(
        name="Stripe-Signature",
        description="`t=<unix time>,v1=<hex HMAC-SHA256>`, as Stripe signs; without it: 400",
        examples=[
            Example(
                value="t=1764072000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
            )
        ],
    ),
]


@post(
    "/v1/stripe/webhook",
    status_code=200,
    tags=["stripe"],
    responses=errors(400, 413, 503),
    dto=RawBody[StripeEvent],
    return_dto=None,
)
async def stripe_webhook(
    services: ServicesDependency,
    data: Annotated[
        bytes,
        Documented(
            examples=[
                example(
                    "a paid Checkout",
                    {
                        "id": "evt_1QEXAMPLE",
                        "type": "checkout.session.completed",
                        "data": {"object": {"id": "cs_test_a1B2c3", "payment_status": "paid"}},
                    },
                )
            ],
        ),
    ],
    stripe_signature: StripeSignature,
) -> WebhookReceived:
    """200 for every verified event, handled or not; 400 and nothing recorded otherwise."""
    payload = data
    try:
        verify_signature(payload, stripe_signature, services.webhook_secrets)
    except InvalidWebhook as error:
        webhook_outcomes["bad_signature"].inc()
        log.warning("rejected a Stripe webhook delivery: %s", error)
        raise
    try:
        envelope, meaning = parse_event(payload)
    except InvalidWebhook as error:
        webhook_outcomes["malformed"].inc()
        log.warning("rejected a Stripe webhook delivery: %s", error)
        raise
    stripe_event_id.set(envelope.id)  # on every log line of this delivery
    new = await services.ledger.apply_payment_event(envelope.id, envelope.type, meaning)
    if not new:
        webhook_outcomes["duplicate"].inc()
    else:
        webhook_outcomes["ignored" if meaning is None else "applied"].inc()
    return WebhookReceived(received=True)




"""Stripe's webhook: verified on the raw body, applied exactly once."""

from __future__ import annotations

import logging
from typing import Annotated

from litestar import Request, post
from litestar.params import HeaderParameter

from api.log_context import stripe_event_id
from api.metrics import webhook_outcomes
from api.openapi import StripeEvent, WebhookReceived, documented, errors
from api.services import ServicesDependency
from ledger.adapters.stripe_webhooks import InvalidWebhook, parse_event, verify_signature

log = logging.getLogger(__name__)

StripeSignature = Annotated[
    str | None,
    HeaderParameter(
        name="Stripe-Signature",
        description="`t=<unix time>,v1=<hex HMAC-SHA256>`, as Stripe signs; without it: 400",
        schema_extra={"one_of": None, "type": "string", "examples": ["t=1764072000,v1=5257a8…"]},
    ),
]


@post(
    "/v1/stripe/webhook",
    status_code=200,
    tags=["stripe"],
    responses=errors(400, 413, 503),
    operation_class=documented(
        StripeEvent,
        examples={
            "a paid Checkout": {
                "id": "evt_1QEXAMPLE",
                "type": "checkout.session.completed",
                "data": {"object": {"id": "cs_test_a1B2c3", "payment_status": "paid"}},
            }
        },
        answer={"received": True},
        required_headers=("Stripe-Signature",),
    ),
)
async def stripe_webhook(
    request: Request,
    services: ServicesDependency,
    stripe_signature: StripeSignature = None,
) -> WebhookReceived:
    """200 for every verified event, handled or not; 400 and nothing recorded otherwise."""
    payload = await request.body()
    try:
        verify_signature(payload, stripe_signature, services.webhook_secrets)
    except InvalidWebhook as error:
        webhook_outcomes["bad_signature"] += 1
        log.warning("rejected a Stripe webhook delivery: %s", error)
        raise
    try:
        envelope, meaning = parse_event(payload)
    except InvalidWebhook as error:
        webhook_outcomes["malformed"] += 1
        log.warning("rejected a Stripe webhook delivery: %s", error)
        raise
    stripe_event_id.set(envelope.id)  # on every log line of this delivery
    new = await services.ledger.apply_payment_event(envelope.id, envelope.type, meaning)
    if not new:
        webhook_outcomes["duplicate"] += 1
    else:
        webhook_outcomes["ignored" if meaning is None else "applied"] += 1
    return WebhookReceived(received=True)


ROUTES = [stripe_webhook]

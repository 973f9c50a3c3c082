"""Stripe's webhook: verified on the raw body, applied exactly once."""

from __future__ import annotations

import logging

from litestar import Request, post

from api.log_context import stripe_event_id
from api.services import ServicesDependency
from ledger.stripe_webhooks import InvalidWebhook, parse_event, verify_signature

log = logging.getLogger(__name__)


@post("/v1/stripe/webhook", status_code=200, tags=["stripe"])
async def stripe_webhook(request: Request, services: ServicesDependency) -> dict[str, bool]:
    """200 for every verified event, handled or not; 400 and nothing recorded otherwise."""
    payload = await request.body()
    try:
        verify_signature(payload, request.headers.get("stripe-signature"), services.webhook_secrets)
        envelope, meaning = parse_event(payload)
    except InvalidWebhook as error:
        log.warning("rejected a Stripe webhook delivery: %s", error)
        raise
    stripe_event_id.set(envelope.id)  # on every log line of this delivery
    if meaning is None:
        await services.payments.record_ignored(envelope.id, envelope.type)
    else:
        await services.payments.apply(meaning, envelope.type)
    return {"received": True}


ROUTES = [stripe_webhook]

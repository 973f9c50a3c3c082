"""Stripe's webhook: verified on the raw body, applied exactly once."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Annotated

import msgspec
from litestar import post
from litestar.openapi.spec import Example
from litestar.params import Body as Documented
from litestar.params import HeaderParameter

from api.dependencies import ServicesDependency
from api.errors import SIGNED_BODY
from api.express import Call, Declined, express
from api.log_context import set_stripe_event_id
from api.metrics import webhook_outcomes
from api.openapi import COMMAND_HEADERS, errors, example
from api.schemas import StripeEvent, WebhookReceived
from api.services import Services
from api.validation import RawBody
from ledger.adapters.stripe_webhooks import InvalidWebhook, parse_event, verify_signature

log = logging.getLogger(__name__)

EXAMPLE_EVENT = {
    "id": "evt_1QEXAMPLE",
    "type": "checkout.session.completed",
    "data": {"object": {"id": "cs_test_a1B2c3", "payment_status": "paid"}},
}
"""The documented example delivery."""

EXAMPLE_SECRET = "whsec_example"  # noqa: S105 (the documentation's, signs nothing real)
EXAMPLE_TIMESTAMP = 1764072000


def example_signature(body: bytes) -> str:
    """A ``Stripe-Signature`` as Stripe makes it: ``t=<time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    signed = f"{EXAMPLE_TIMESTAMP}.".encode() + body
    v1 = hmac.new(EXAMPLE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={EXAMPLE_TIMESTAMP},v1={v1}"


StripeSignature = Annotated[
    str,
    HeaderParameter(
        name="Stripe-Signature",
        description=(
            '`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed by the '
            "endpoint's `whsec_` secret, as Stripe signs; several `v1` may be given. Missing "
            "or not matching a configured secret within 300 s: 400. The example signs the "
            "example event as compact JSON (no spaces) with the secret `whsec_example`."
        ),
        examples=[Example(value=example_signature(msgspec.json.encode(EXAMPLE_EVENT)))],
    ),
]


async def receive_delivery(services: Services, payload: bytes, signature: str) -> WebhookReceived:
    """Verify a delivery on its raw bytes, then apply its event once.

    A verified delivery the ledger cannot keep (not an event, an id longer than Stripe's)
    is answered 200 too, as the contract says of every verified event, and counted
    ``malformed``: nothing is recorded, and an operator is told (docs/operations-metrics.md).
    """
    try:
        verify_signature(payload, signature, services.webhook_secrets)
    except InvalidWebhook as error:
        webhook_outcomes["bad_signature"].inc()
        log.warning("rejected a Stripe webhook delivery: %s", error)
        raise
    try:
        envelope, meaning = parse_event(payload, livemode=services.stripe_livemode)
    except InvalidWebhook as error:
        # Signed with our secret, so Stripe's (or someone holding it): a non-2xx would have
        # Stripe send the same bytes again for three days, refused each time.
        webhook_outcomes["malformed"].inc()
        log.warning("dropped a verified Stripe delivery, nothing recorded: %s", error)
        return WebhookReceived(received=True)
    set_stripe_event_id(envelope.id)  # on every log line of this delivery
    new = await services.ledger.apply_payment_event(envelope.id, envelope.type, meaning)
    if not new:
        webhook_outcomes["duplicate"].inc()
    else:
        webhook_outcomes["ignored" if meaning is None else "applied"].inc()
    return WebhookReceived(received=True)


async def stripe_webhook_express(call: Call) -> WebhookReceived:
    """``stripe_webhook`` in the express lane (api/express.py)."""
    signature = call.header(b"stripe-signature")
    if signature is None or not call.body:
        raise Declined
    return await receive_delivery(call.services, call.body, signature)


@post(
    "/v1/stripe/webhook",
    response_headers=COMMAND_HEADERS,
    status_code=200,
    tags=["stripe"],
    responses=errors(400, 413, 503),
    dto=RawBody[StripeEvent],
    return_dto=None,
    opt={SIGNED_BODY: True},
    middleware=[express(stripe_webhook_express)],
)
async def stripe_webhook(
    services: ServicesDependency,
    data: Annotated[
        bytes,
        Documented(
            examples=[example("a paid Checkout", EXAMPLE_EVENT)],
        ),
    ],
    stripe_signature: StripeSignature,
) -> WebhookReceived:
    """200 for every verified event, handled or not; 400 and nothing recorded otherwise."""
    return await receive_delivery(services, data, stripe_signature)

"""A test control for a refund's failure (Stripe's API cannot make a refund fail either).

Stripe reports a refund at once as ``succeeded`` (or ``pending``) and counts it in its
charge's ``amount_refunded``; days later the customer's bank may return it (a closed or
expired card: Stripe's test card ``4000 0000 0000 5126``). The refund then turns
``failed`` with a ``failure_reason``, the charge's ``amount_refunded`` drops by its amount,
and Stripe sends ``charge.refund.updated``, then ``refund.updated`` and ``refund.failed``
(the last two since API version 2024-10-28, which the stand-in speaks). No
``charge.refunded`` is sent for it.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.params import FromPath

from stripe_standin.errors import StripeError, no_such
from stripe_standin.state import get_state, json_body, json_response

FailureReason = Literal[
    "charge_for_pending_refund_disputed",
    "declined",
    "expired_or_canceled_card",
    "insufficient_funds",
    "lost_or_stolen_card",
    "merchant_request",
    "unknown",
]

REFUND_ENDED = ("failed", "canceled")
"""A refund in one of these statuses returned no money, and never changes again."""


class FailRefund(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/refunds/{id}/fail`` (optional)."""

    failure_reason: FailureReason = "expired_or_canceled_card"


@post("/refunds/{refund_id:str}/fail", status_code=200)
async def fail_refund(request: Request[Any, Any, Any], refund_id: FromPath[str]) -> Response[bytes]:
    """Make a refund fail: its money goes back to the balance, not to the customer;
    delivers ``charge.refund.updated``, ``refund.updated`` and ``refund.failed``."""
    body: FailRefund = await json_body(request, FailRefund)
    state = get_state(request.app)
    refund = state.refunds.get(refund_id)
    if refund is None:
        raise no_such("refund", refund_id, "refund")
    if refund["status"] in REFUND_ENDED:
        raise StripeError(400, f"Refund {refund_id} has already {refund['status']}.")
    charge = state.charges[refund["charge"]]
    previous = {"status": refund["status"], "failure_reason": None}
    refund["status"] = "failed"
    refund["failure_reason"] = body.failure_reason
    charge["amount_refunded"] -= int(refund["amount"])
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    webhooks = state.webhooks
    events = [
        await webhooks.publish("charge.refund.updated", refund, previous_attributes=previous),
        await webhooks.publish("refund.updated", refund, previous_attributes=previous),
        await webhooks.publish("refund.failed", refund),
    ]
    held = set(webhooks.held)
    return json_response(
        {
            "refund": refund,
            "delivered": [event.id for event in events if event.id not in held],
            "held": [event.id for event in events if event.id in held],
        }
    )

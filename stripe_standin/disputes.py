"""Test helpers that open and close disputes (Stripe's API cannot create them either)."""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.params import FromPath

from stripe_standin.errors import StripeError, invalid, no_such
from stripe_standin.payments import build_dispute, refundable
from stripe_standin.state import get_state, json_response

DisputeReason = Literal[
    "bank_cannot_process",
    "check_returned",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
]


class OpenDispute(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/charges/{id}/dispute`` (optional)."""

    reason: DisputeReason = "fraudulent"


class CloseDispute(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/disputes/{id}/close``."""

    status: Literal["won", "lost"]


async def _body(request: Request[Any, Any, Any], kind: type[Any]) -> Any:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise invalid(str(exc)) from exc


@post("/charges/{charge_id:str}/dispute", status_code=200)
async def open_dispute(
    request: Request[Any, Any, Any], charge_id: FromPath[str]
) -> Response[bytes]:
    """Dispute what is left of a charge; delivers ``charge.dispute.created``."""
    body: OpenDispute = await _body(request, OpenDispute)
    state = get_state(request.app)
    charge = state.charges.get(charge_id)
    if charge is None:
        raise no_such("charge", charge_id, "charge")
    if charge["disputed"]:
        raise invalid(f"Charge {charge_id} is already disputed.")
    if refundable(charge) == 0:
        raise invalid(f"Charge {charge_id} has been fully refunded; there is nothing to dispute.")
    dispute = build_dispute(charge, body.reason, int(time.time()))
    state.disputes[dispute["id"]] = dispute
    event = await state.webhooks.publish("charge.dispute.created", dispute)
    return json_response({"dispute": dispute, "delivered": [event.id]})


@post("/disputes/{dispute_id:str}/close", status_code=200)
async def close_dispute(
    request: Request[Any, Any, Any], dispute_id: FromPath[str]
) -> Response[bytes]:
    """Close a dispute as ``won`` or ``lost``; delivers ``charge.dispute.closed``."""
    body: CloseDispute = await _body(request, CloseDispute)
    state = get_state(request.app)
    dispute = state.disputes.get(dispute_id)
    if dispute is None:
        raise no_such("dispute", dispute_id, "dispute")
    if dispute["status"] in ("won", "lost"):
        raise StripeError(400, f"Dispute {dispute_id} is already closed ({dispute['status']}).")
    previous = {"status": dispute["status"]}
    dispute["status"] = body.status
    event = await state.webhooks.publish(
        "charge.dispute.closed", dispute, previous_attributes=previous
    )
    return json_response({"dispute": dispute, "delivered": [event.id]})

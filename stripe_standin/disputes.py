"""Test controls for a dispute's life (Stripe's API cannot create disputes either).

An inquiry (``warning_needs_response``) withdraws nothing and may be refunded; it is
reviewed (``warning_under_review``), closed (``warning_closed``), or escalated to a
chargeback. A chargeback (``needs_response``) withdraws the amount and the fee at once
(``charge.dispute.funds_withdrawn`` follows ``charge.dispute.created``), is reviewed
(``under_review``), then ``won`` (``charge.dispute.funds_reinstated`` follows
``charge.dispute.closed``) or ``lost``; lost, it may still give back part of the money (a
dispute of the whole charge after a partial refund, "partially won": the refunded part is
reinstated, the status stays ``lost``). A lost chargeback may be appealed (API version
2026-10-28): ``appeal_needs_response``, ``appeal_under_review``, then ``won`` or ``lost``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.params import FromPath

from stripe_standin.errors import StripeError, invalid, no_such
from stripe_standin.events import Event
from stripe_standin.money import format_amount
from stripe_standin.payments import (
    build_dispute,
    is_closed,
    is_inquiry,
    refundable,
    reinstate_funds,
    withdraw_funds,
)
from stripe_standin.state import StandinState, get_state, json_body, json_response

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
OpenStatus = Literal[
    "warning_needs_response",
    "warning_under_review",
    "needs_response",
    "under_review",
    "appeal_under_review",
]
APPEAL = ("appeal_needs_response", "appeal_under_review")
"""The statuses of an appealed loss: they move only from the first to the second."""


class OpenDispute(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/charges/{id}/dispute`` (optional: a chargeback of what is left)."""

    reason: DisputeReason = "fraudulent"
    status: Literal["needs_response", "warning_needs_response"] = "needs_response"
    amount: int | None = None  # default: the charge's amount less what is refunded; at most
    # the whole charge (issuers sometimes dispute all of it after a partial refund)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class UpdateDispute(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/disputes/{id}/update``."""

    status: OpenStatus | None = None
    metadata: dict[str, str] | None = None


class CloseDispute(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/disputes/{id}/close``."""

    status: Literal["won", "lost", "warning_closed"]
    reinstated: int | None = None
    """With ``lost``: the part of the money given back all the same ("partially won")."""


def _dispute(state: StandinState, dispute_id: str) -> dict[str, Any]:
    dispute = state.disputes.get(dispute_id)
    if dispute is None:
        raise no_such("dispute", dispute_id, "dispute")
    if is_closed(dispute):
        raise StripeError(400, f"Dispute {dispute_id} is already closed ({dispute['status']}).")
    return dispute


def _answer(state: StandinState, dispute: dict[str, Any], events: list[Event]) -> Response[bytes]:
    held = set(state.webhooks.held)
    return json_response(
        {
            "dispute": dispute,
            "delivered": [event.id for event in events if event.id not in held],
            "held": [event.id for event in events if event.id in held],
        }
    )


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``previous_attributes``: the old value of each top-level field that changed."""
    return {key: value for key, value in before.items() if after.get(key) != value}


@post("/charges/{charge_id:str}/dispute", status_code=200)
async def open_dispute(
    request: Request[Any, Any, Any], charge_id: FromPath[str]
) -> Response[bytes]:
    """Open an inquiry or a chargeback; delivers ``charge.dispute.created`` (and, for a
    chargeback, ``charge.dispute.funds_withdrawn``)."""
    body: OpenDispute = await json_body(request, OpenDispute)
    state = get_state(request.app)
    charge = state.charges.get(charge_id)
    if charge is None:
        raise no_such("charge", charge_id, "charge")
    if charge["disputed"]:
        raise invalid(f"Charge {charge_id} is already disputed.")
    left = refundable(charge)
    if left == 0:
        raise invalid(f"Charge {charge_id} has been fully refunded; there is nothing to dispute.")
    amount = left if body.amount is None else body.amount
    whole = int(charge["amount"])
    if not 1 <= amount <= whole:
        currency = str(charge["currency"])
        raise invalid(
            f"The dispute amount must be between 1 and {whole} "
            f"({format_amount(whole, currency)}, the charge's amount).",
            "amount",
        )
    now = int(time.time())
    dispute = build_dispute(charge, reason=body.reason, status=body.status, amount=amount, now=now)
    dispute["metadata"] = dict(body.metadata)
    state.disputes[dispute["id"]] = dispute
    if not is_inquiry(dispute):
        withdraw_funds(dispute, now)
    webhooks = state.webhooks
    events = [await webhooks.publish("charge.dispute.created", dispute)]
    if not is_inquiry(dispute):
        events.append(await webhooks.publish("charge.dispute.funds_withdrawn", dispute))
    return _answer(state, dispute, events)


@post("/disputes/{dispute_id:str}/update", status_code=200)
async def update_dispute(
    request: Request[Any, Any, Any], dispute_id: FromPath[str]
) -> Response[bytes]:
    """Move an open dispute to another open status (or change its metadata); delivers
    ``charge.dispute.updated``. An inquiry moved to ``needs_response`` or ``under_review``
    has become a chargeback: ``charge.dispute.funds_withdrawn`` follows."""
    body: UpdateDispute = await json_body(request, UpdateDispute)
    state = get_state(request.app)
    dispute = _dispute(state, dispute_id)
    escalates = False
    if body.status is not None and body.status != dispute["status"]:
        if not is_inquiry(dispute) and body.status.startswith("warning_"):
            raise invalid(
                f"Dispute {dispute_id} is a chargeback ({dispute['status']}); "
                "it cannot become an inquiry again.",
                "status",
            )
        if (dispute["status"] in APPEAL) != (body.status in APPEAL):
            raise invalid(
                f"Dispute {dispute_id} is {dispute['status']}: an appeal moves only from "
                "appeal_needs_response to appeal_under_review (appeal a lost chargeback first).",
                "status",
            )
        escalates = is_inquiry(dispute) and not body.status.startswith("warning_")
    before = {
        "status": dispute["status"],
        "metadata": dict(dispute["metadata"]),
        "is_charge_refundable": dispute["is_charge_refundable"],
    }
    if body.status is not None:
        dispute["status"] = body.status
    if body.metadata is not None:
        dispute["metadata"] = dict(body.metadata)
    if escalates:
        withdraw_funds(dispute, int(time.time()))
    previous = _changes(before, dispute)
    if not previous:
        return _answer(state, dispute, [])  # Stripe sends no event when nothing changed
    webhooks = state.webhooks
    events = [
        await webhooks.publish("charge.dispute.updated", dispute, previous_attributes=previous)
    ]
    if escalates:
        events.append(await webhooks.publish("charge.dispute.funds_withdrawn", dispute))
    return _answer(state, dispute, events)


@post("/disputes/{dispute_id:str}/close", status_code=200)
async def close_dispute(
    request: Request[Any, Any, Any], dispute_id: FromPath[str]
) -> Response[bytes]:
    """Close a chargeback as ``won`` or ``lost``, or an inquiry as ``warning_closed``;
    delivers ``charge.dispute.closed`` (and ``charge.dispute.funds_reinstated`` when won)."""
    body: CloseDispute = await json_body(request, CloseDispute)
    state = get_state(request.app)
    dispute = _dispute(state, dispute_id)
    if is_inquiry(dispute) and body.status != "warning_closed":
        raise invalid(
            f"Dispute {dispute_id} is an inquiry: it closes as warning_closed "
            "(update it to needs_response first to make it a chargeback).",
            "status",
        )
    if not is_inquiry(dispute) and body.status == "warning_closed":
        raise invalid(f"Dispute {dispute_id} is a chargeback: it closes as won or lost.", "status")
    reinstated = int(dispute["amount"]) if body.status == "won" else body.reinstated or 0
    if body.reinstated is not None and not (
        body.status == "lost" and 1 <= body.reinstated < int(dispute["amount"])
    ):
        raise invalid(
            "Only a lost chargeback gives back part of its money, less than all of it.",
            "reinstated",
        )
    previous = {"status": dispute["status"]}
    dispute["status"] = body.status
    if reinstated:
        reinstate_funds(dispute, int(time.time()), reinstated)
    webhooks = state.webhooks
    events = [
        await webhooks.publish("charge.dispute.closed", dispute, previous_attributes=previous)
    ]
    if reinstated:
        events.append(await webhooks.publish("charge.dispute.funds_reinstated", dispute))
    return _answer(state, dispute, events)


@post("/disputes/{dispute_id:str}/appeal", status_code=200)
async def appeal_dispute(
    request: Request[Any, Any, Any], dispute_id: FromPath[str]
) -> Response[bytes]:
    """Appeal a lost chargeback (``appeal_needs_response``); delivers
    ``charge.dispute.updated``. The money stays withdrawn until the appeal is won."""
    state = get_state(request.app)
    dispute = state.disputes.get(dispute_id)
    if dispute is None:
        raise no_such("dispute", dispute_id, "dispute")
    if dispute["status"] != "lost":
        raise invalid(
            f"Dispute {dispute_id} is {dispute['status']}: only a lost chargeback is appealed.",
            "status",
        )
    previous = {"status": dispute["status"]}
    dispute["status"] = "appeal_needs_response"
    event = await state.webhooks.publish(
        "charge.dispute.updated", dispute, previous_attributes=previous
    )
    return _answer(state, dispute, [event])

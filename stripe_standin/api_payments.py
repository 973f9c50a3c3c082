"""``/v1`` routes for what a payment leaves behind: refunds, charges, PaymentIntents, disputes."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath

from stripe_standin.api import parse_params
from stripe_standin.auth import api_gate
from stripe_standin.errors import bad_integer, invalid, no_such
from stripe_standin.idempotency import idempotency_scope, remember, replay_if_known
from stripe_standin.money import format_amount
from stripe_standin.payments import build_refund, refundable
from stripe_standin.state import StandinState, get_state, json_response, request_id
from stripe_standin.validate import check_known, check_not_empty, enum, integer, metadata

REFUND_PARAMS = frozenset(
    [
        "amount",
        "charge",
        "currency",
        "customer",
        "expand",
        "instructions_email",
        "metadata",
        "origin",
        "payment_intent",
        "reason",
        "refund_application_fee",
        "reverse_transfer",
    ]
)
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def _refunded_charge(state: StandinState, params: dict[str, Any]) -> dict[str, Any]:
    """The charge a refund's ``charge`` or ``payment_intent`` names."""
    if "charge" in params and "payment_intent" in params:
        raise invalid("You may only specify one of these parameters: charge, payment_intent.")
    if "charge" in params:
        charge_id = str(params["charge"])
        charge = state.charges.get(charge_id)
        if charge is None:
            raise no_such("charge", charge_id, "charge", status=400)
        return charge
    if "payment_intent" not in params:
        raise invalid(
            "One of the following params should be provided for this request: "
            "payment_intent or charge."
        )
    pi_id = str(params["payment_intent"])
    payment_intent = state.payment_intents.get(pi_id)
    if payment_intent is None:
        raise no_such("payment_intent", pi_id, "payment_intent", status=400)
    if payment_intent["latest_charge"] is None:
        raise invalid(
            f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
            "payment_intent",
        )
    return state.charges[payment_intent["latest_charge"]]


def _refund_amount(state: StandinState, charge: dict[str, Any], value: Any) -> int:
    left = refundable(charge)
    dispute = state.disputes.get(charge.get("dispute") or "")
    # An open inquiry may still be refunded; a chargeback has taken the money back already.
    if charge["disputed"] and not (dispute is not None and dispute["is_charge_refundable"]):
        raise invalid(
            f"Charge {charge['id']} has been charged back; cannot issue a refund.",
            code="charge_disputed",
        )
    if left == 0:
        raise invalid(
            f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
        )
    if value is None:
        return left
    amount = integer(value, "amount")
    if amount < 1:
        raise bad_integer("amount", "Invalid positive integer")
    if amount > left:
        currency = str(charge["currency"])
        what = "charge amount" if left == charge["amount"] else "unrefunded amount on charge"
        raise invalid(
            f"Refund amount ({format_amount(amount, currency)}) is greater than {what} "
            f"({format_amount(left, currency)})",
            "amount",
        )
    return amount


@post("/refunds", status_code=200)
async def create_refund(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``POST /v1/refunds``: refund all or part of a charge; delivers ``charge.refunded``, then
    ``refund.created``."""
    state = get_state(request.app)
    params = parse_params(await request.body())
    endpoint = "POST /v1/refunds"
    scope = idempotency_scope(request)
    replay = replay_if_known(state, scope, endpoint, params)
    if replay is not None:
        return replay
    check_known(params, REFUND_PARAMS, "")
    check_not_empty(params, [])
    charge = _refunded_charge(state, params)
    amount = _refund_amount(state, charge, params.get("amount"))
    reason = enum(params, "reason", REFUND_REASONS)
    before = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
    refund = build_refund(
        charge, amount, reason, metadata(params.get("metadata"), "metadata"), int(time.time())
    )
    state.refunds[refund["id"]] = refund
    body = msgspec.json.encode(refund)
    remember(state, scope, endpoint, params, body, request)
    requested = {
        "request_id": request_id(request.scope),
        "idempotency_key": scope[1] if scope else None,
    }
    await state.webhooks.publish(
        "charge.refunded",
        charge,
        previous_attributes={key: value for key, value in before.items() if charge[key] != value},
        **requested,
    )
    # Sent for every refund since API version 2024-10-28 (the stand-in's is later).
    await state.webhooks.publish("refund.created", refund, **requested)
    return json_response(body)


def _lookup(objects: dict[str, dict[str, Any]], object_id: str, name: str, param: str) -> Any:
    found = objects.get(object_id)
    if found is None:
        raise no_such(name, object_id, param)
    return found


@get("/refunds/{refund_id:str}")
async def retrieve_refund(
    request: Request[Any, Any, Any], refund_id: FromPath[str]
) -> Response[bytes]:
    refunds = get_state(request.app).refunds
    return json_response(_lookup(refunds, refund_id, "refund", "id"))


@get("/charges/{charge_id:str}")
async def retrieve_charge(
    request: Request[Any, Any, Any], charge_id: FromPath[str]
) -> Response[bytes]:
    charges = get_state(request.app).charges
    return json_response(_lookup(charges, charge_id, "charge", "id"))


@get("/payment_intents/{pi_id:str}")
async def retrieve_payment_intent(
    request: Request[Any, Any, Any], pi_id: FromPath[str]
) -> Response[bytes]:
    intents = get_state(request.app).payment_intents
    return json_response(_lookup(intents, pi_id, "payment_intent", "intent"))


@get("/disputes/{dispute_id:str}")
async def retrieve_dispute(
    request: Request[Any, Any, Any], dispute_id: FromPath[str]
) -> Response[bytes]:
    disputes = get_state(request.app).disputes
    return json_response(_lookup(disputes, dispute_id, "dispute", "dispute"))


def make_payments_router() -> Router:
    """Refunds and the objects a payment makes, behind :func:`api_gate` like the rest of ``/v1``."""
    return Router(
        path="/v1",
        route_handlers=[
            create_refund,
            retrieve_refund,
            retrieve_charge,
            retrieve_payment_intent,
            retrieve_dispute,
        ],
        before_request=api_gate,
    )

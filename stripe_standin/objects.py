"""Stripe-shaped JSON objects: Checkout Sessions, their line items, and ids."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from stripe_standin.validate import CreateRequest, LineItemSpec

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """``new_id("pi_")`` -> ``"pi_3MtwBwLkdIwHu7ix28a3tqPa"``."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_session_id() -> str:
    # Stripe's test Checkout Session ids are "cs_test_a1" / "cs_test_b1" + 56 characters.
    return new_id("cs_test_a1", 56)


@dataclass
class SessionRecord:
    """A stored session: the public object plus its line items (shown only when expanded)."""

    data: dict[str, Any]
    line_items: list[dict[str, Any]] = field(default_factory=list)
    # Not part of the session object: what ``payment_intent_data[metadata]`` asked for.
    payment_intent_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    def view(self, expand: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """The object as the API returns it, with ``expand`` applied."""
        data = dict(self.data)
        if "line_items" in expand:
            data["line_items"] = self.line_items_list()
        return data

    def line_items_list(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": self.line_items,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{self.id}/line_items",
        }


def build_session(request: CreateRequest, *, now: int, public_base_url: str) -> SessionRecord:
    """A new open Checkout Session for validated parameters."""
    session_id = new_session_id()
    payment = request.mode == "payment"
    setup = request.mode == "setup"
    total = request.amount_total
    hosted = request.ui_mode == "hosted_page"
    data: dict[str, Any] = {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False} if payment else None,
        "after_expiration": None,
        "allow_promotion_codes": request.allow_promotion_codes,
        "amount_subtotal": total,
        "amount_total": total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": request.billing_address_collection,
        "cancel_url": request.cancel_url,
        "client_reference_id": request.client_reference_id,
        "client_secret": None if hosted else f"{session_id}_secret_{new_id('', 24)}",
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": now,
        "currency": request.currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": None,
        "customer_account": None,
        "customer_creation": "if_required" if payment else None,
        "customer_details": None,
        "customer_email": request.customer_email,
        "discounts": [],
        "expires_at": request.expires_at,
        "invoice": None,
        "invoice_creation": _invoice_creation() if payment else None,
        "livemode": False,
        "locale": request.locale,
        "metadata": dict(request.metadata),
        "mode": request.mode,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required" if payment else "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "no_payment_required" if setup else "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "presentment_details": None,
        "recovered_from": None,
        "redirect_on_completion": None if hosted else "always",
        "return_url": request.return_url,
        "saved_payment_method_options": None,
        "setup_intent": new_id("seti_") if setup else None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": request.submit_type,
        "subscription": None,
        "success_url": request.success_url,
        "total_details": None
        if setup
        else {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": request.ui_mode,
        "url": f"{public_base_url}/c/pay/{session_id}" if hosted else None,
        "wallet_options": None,
    }
    items = [_line_item(spec, now) for spec in request.line_items]
    return SessionRecord(
        data=data, line_items=items, payment_intent_metadata=dict(request.payment_intent_metadata)
    )


def _invoice_creation() -> dict[str, Any]:
    return {
        "enabled": False,
        "invoice_data": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": None,
            "metadata": {},
            "rendering_options": None,
        },
    }


def _line_item(spec: LineItemSpec, now: int) -> dict[str, Any]:
    return {
        "id": new_id("li_"),
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": spec.amount,
        "amount_tax": 0,
        "amount_total": spec.amount,
        "currency": spec.currency,
        "description": spec.product_name,
        "metadata": dict(spec.metadata),
        "price": {
            "id": new_id("price_"),
            "object": "price",
            "active": False,
            "billing_scheme": "per_unit",
            "created": now,
            "currency": spec.currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": new_id("prod_", 14),
            "recurring": None
            if spec.recurring is None
            else {**spec.recurring, "meter": None, "usage_type": "licensed"},
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time" if spec.recurring is None else "recurring",
            "unit_amount": spec.unit_amount,
            "unit_amount_decimal": str(spec.unit_amount),
        },
        "quantity": spec.quantity,
    }


# --- State changes driven by the hosted page (``checkout.py`` adds charges and events). ---


def complete(
    record: SessionRecord, *, paid: bool = True, email: str | None = None, name: str | None = None
) -> None:
    """The customer submitted the form; ``paid=False`` for a payment that settles later."""
    data = record.data
    data["status"] = "complete"
    data["url"] = None
    if data["mode"] == "payment":
        data["payment_intent"] = new_id("pi_")
    elif data["mode"] == "subscription":
        data["subscription"] = new_id("sub_")
        data["invoice"] = new_id("in_")
    if paid and data["mode"] != "setup":
        data["payment_status"] = "paid"
    data["customer_details"] = {
        "address": None,
        "business_name": None,
        "email": data["customer_email"] or email or "customer@example.com",
        "individual_name": None,
        "name": name,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }


def expire(record: SessionRecord) -> None:
    """What expiry (by time or by the Expire button) does to the session."""
    record.data["status"] = "expired"
    record.data["url"] = None

"""Check Checkout Session parameters the way Stripe does, with Stripe's wording."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from stripe_standin.errors import bad_integer, empty, invalid, missing, no_such
from stripe_standin.errors import unknown as unknown_param
from stripe_standin.money import CURRENCIES, format_amount


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Parameter names of stripe-python 16.1's SessionCreateParams (API 2026-10-28.endive).
CREATE_PARAMS = _names(
    """adaptive_pricing after_expiration allow_promotion_codes allowed_payment_method_types
    automatic_tax billing_address_collection branding_settings cancel_url client_reference_id
    consent_collection currency custom_fields custom_text customer customer_account
    customer_creation customer_email customer_update discounts excluded_payment_method_types
    expand expires_at integration_identifier invoice_creation line_items locale
    managed_payments metadata mode name_collection optional_items origin_context
    payment_intent_data payment_method_collection payment_method_configuration
    payment_method_data payment_method_options permissions phone_number_collection
    redirect_on_completion return_url saved_payment_method_options setup_intent_data
    shipping_address_collection shipping_options submit_type subscription_data success_url
    tax_id_collection ui_mode wallet_options"""
)
LINE_ITEM_PARAMS = _names("adjustable_quantity metadata price price_data quantity tax_rates")
PRICE_DATA_PARAMS = _names(
    "currency product product_data recurring tax_behavior unit_amount unit_amount_decimal"
)
PRODUCT_DATA_PARAMS = _names("description images metadata name tax_code tax_details unit_label")
RECURRING_PARAMS = frozenset({"interval", "interval_count"})
PAYMENT_INTENT_DATA_PARAMS = _names(
    """application_fee_amount capture_method description metadata on_behalf_of receipt_email
    setup_future_usage shipping statement_descriptor statement_descriptor_suffix transfer_data
    transfer_group"""
)
RETRIEVE_PARAMS = frozenset({"expand"})
EXPANDABLE = frozenset({"line_items"})

MODES = ("payment", "setup", "subscription")
UI_MODES = ("elements", "embedded_page", "form", "hosted_page")
INTERVALS = ("day", "week", "month", "year")
MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 60 * 60
MAX_AMOUNT = 99_999_999
# Stripe's minimum charge for the currencies we are likely to use; others are not checked.
MIN_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50, "jpy": 50}
_INTEGER = re.compile(r"^-?[0-9]+$")
_SUPPORTED = ", ".join(["usd", *sorted(CURRENCIES - {"usd"})])
"""As Stripe lists them in its refusal: ``usd`` first."""


@dataclass(frozen=True)
class LineItemSpec:
    """One validated ``line_items[i]`` entry."""

    quantity: int
    currency: str
    unit_amount: int
    product_name: str
    product_description: str | None = None
    recurring: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_amount


@dataclass(frozen=True)
class CreateRequest:
    """The validated parameters of ``POST /v1/checkout/sessions``."""

    mode: str
    ui_mode: str
    expires_at: int
    line_items: list[LineItemSpec]
    currency: str | None
    metadata: dict[str, str]
    expand: list[str]
    success_url: str | None = None
    cancel_url: str | None = None
    return_url: str | None = None
    client_reference_id: str | None = None
    customer_email: str | None = None
    locale: str | None = None
    submit_type: str | None = None
    billing_address_collection: str | None = None
    allow_promotion_codes: bool | None = None
    # ``payment_intent_data[metadata]``: copied onto the PaymentIntent and its Charge.
    payment_intent_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def amount_total(self) -> int | None:
        return sum(item.amount for item in self.line_items) if self.line_items else None


def validate_create(
    params: dict[str, Any], now: int, *, min_expiry_seconds: int = MIN_EXPIRY_SECONDS
) -> CreateRequest:
    """Raise :class:`StripeError` for the first problem Stripe would report.

    ``min_expiry_seconds``: Stripe's 30 minutes, unless a test stand-in was started with less.
    """
    check_known(params, CREATE_PARAMS, "")
    check_not_empty(params, [])
    mode = enum(params, "mode", MODES)
    if mode is None:
        raise missing("mode")
    ui_mode = enum(params, "ui_mode", UI_MODES) or "hosted_page"
    success_url = url(params, "success_url")
    cancel_url = url(params, "cancel_url")
    return_url = url(params, "return_url")
    if ui_mode == "hosted_page" and success_url is None:
        raise missing("success_url")
    if (
        ui_mode != "hosted_page"
        and return_url is None
        and (params.get("redirect_on_completion") != "never")
    ):
        raise missing("return_url")
    line_items = _line_items(params.get("line_items"), mode)
    currency = string(params, "currency")
    if currency is not None:
        currency = currency_code(currency, "currency")
    if line_items:
        currency = line_items[0].currency
    request = CreateRequest(
        mode=mode,
        ui_mode=ui_mode,
        expires_at=_expires_at(params.get("expires_at"), now, min_expiry_seconds),
        line_items=line_items,
        currency=currency.lower() if currency else None,
        metadata=metadata(params.get("metadata"), "metadata"),
        expand=expand(params.get("expand")),
        success_url=success_url,
        cancel_url=cancel_url,
        return_url=return_url,
        client_reference_id=_client_reference_id(params),
        customer_email=_customer_email(params),
        locale=string(params, "locale"),
        submit_type=enum(params, "submit_type", ("auto", "book", "donate", "pay", "subscribe")),
        billing_address_collection=enum(params, "billing_address_collection", ("auto", "required")),
        allow_promotion_codes=boolean(params, "allow_promotion_codes"),
        payment_intent_metadata=_payment_intent_metadata(params.get("payment_intent_data"), mode),
    )
    if mode == "payment":
        _check_total(request)
    return request


def validate_retrieve(params: dict[str, Any]) -> list[str]:
    """Query parameters of ``GET /v1/checkout/sessions/{id}``; returns ``expand``."""
    check_known(params, RETRIEVE_PARAMS, "")
    return expand(params.get("expand"))


def check_known(params: dict[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in params:
        if key not in allowed:
            raise unknown_param(f"{prefix}[{key}]" if prefix else key)


def check_not_empty(value: Any, path: list[str]) -> None:
    """Stripe reads ``""`` as "unset", which a create cannot do (metadata excepted)."""
    if path and path[-1] == "metadata":
        return
    if value == "":
        raise empty(path[0] + "".join(f"[{part}]" for part in path[1:]))
    if isinstance(value, dict):
        for key, child in value.items():
            check_not_empty(child, [*path, key])
    elif isinstance(value, list):
        for index, child in enumerate(value):
            check_not_empty(child, [*path, str(index)])


def string(params: dict[str, Any], key: str, prefix: str = "") -> str | None:
    value = params.get(key)
    name = f"{prefix}[{key}]" if prefix else key
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {_show(value)}", name)
    return value


def enum(params: dict[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    value = string(params, key)
    if value is not None and value not in choices:
        listed = ", ".join(choices[:-1]) + f", or {choices[-1]}"
        raise invalid(f"Invalid {key}: must be one of {listed}", key)
    return value


def currency_code(value: str, param: str) -> str:
    """``value`` in lower case, if Stripe takes it (``USD`` is ``usd``); else Stripe's
    refusal, which lists the currencies it takes."""
    code = value.lower()
    if code not in CURRENCIES:
        raise invalid(
            f"Invalid currency: {code}. Stripe currently supports these currencies: {_SUPPORTED}",
            param,
            "invalid_currency",
        )
    return code


def integer(value: Any, param: str) -> int:
    if not isinstance(value, str) or not _INTEGER.match(value):
        raise bad_integer(param, f"Invalid integer: {_show(value)}")
    return int(value)


def boolean(params: dict[str, Any], key: str) -> bool | None:
    value = string(params, key)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise invalid(f"Invalid boolean: {value}", key)
    return value == "true"


def hash_(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("Invalid hash", param)
    return value


def array(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid("Invalid array", param)
    return value


def url(params: dict[str, Any], key: str) -> str | None:
    value = string(params, key)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid("Not a valid URL", key, "url_invalid")
    return value


def metadata(value: Any, param: str) -> dict[str, str]:
    """Stripe's metadata limits: 50 keys, keys up to 40 and values up to 500 characters."""
    if value is None or value == "":
        return {}
    pairs = hash_(value, param)
    result: dict[str, str] = {}
    for key, item in pairs.items():
        if not isinstance(item, str):
            raise invalid(f"Invalid value for metadata key '{key}': must be a string", param)
        if len(key) > 40:
            raise invalid(f"Metadata keys can have up to 40 characters (`{key}`).", param)
        if len(item) > 500:
            raise invalid(f"Metadata values can have up to 500 characters (`{key}`).", param)
        if item:
            result[key] = item
    if len(result) > 50:
        raise invalid("Metadata can have up to 50 keys.", param)
    return result


def expand(value: Any) -> list[str]:
    if value is None:
        return []
    paths = array(value, "expand")
    for path in paths:
        if path not in EXPANDABLE:
            raise invalid(f"This property cannot be expanded ({_show(path)}).", "expand")
    return paths


def _line_items(value: Any, mode: str) -> list[LineItemSpec]:
    if mode == "setup":
        if value is not None:
            raise invalid("You can not pass `line_items` in `setup` mode.", "line_items")
        return []
    if value is None:
        raise missing("line_items")
    items = [
        _line_item(item, f"line_items[{i}]") for i, item in enumerate(array(value, "line_items"))
    ]
    if not items:
        raise missing("line_items")
    if len({item.currency for item in items}) > 1:
        raise invalid("All line items must be in the same currency.", "line_items")
    recurring = [item.recurring is not None for item in items]
    if mode == "payment" and any(recurring):
        raise invalid(
            "You specified `payment` mode but passed a recurring price. Either switch to "
            "`subscription` mode or use only one-time prices."
        )
    if mode == "subscription" and not any(recurring):
        raise invalid(
            "You must provide at least one recurring price in `subscription` mode when using "
            "prices."
        )
    return items


def _line_item(value: Any, base: str) -> LineItemSpec:
    item = hash_(value, base)
    check_known(item, LINE_ITEM_PARAMS, base)
    if "price" in item and "price_data" in item:
        raise invalid("You may only specify one of these parameters: price, price_data.", base)
    if "price" in item:
        # The stand-in keeps no Price objects, so every price id is unknown, as on a new account.
        raise no_such("price", str(item["price"]), f"{base}[price]", status=400)
    if "price_data" not in item:
        raise invalid(f"You must specify either `price` or `price_data` in `{base}`.", base)
    if "quantity" not in item:
        raise missing(f"{base}[quantity]")
    quantity = integer(item["quantity"], f"{base}[quantity]")
    if quantity < 1:
        raise bad_integer(f"{base}[quantity]", "This value must be greater than or equal to 1.")
    pbase = f"{base}[price_data]"
    price = hash_(item["price_data"], pbase)
    check_known(price, PRICE_DATA_PARAMS, pbase)
    currency = string(price, "currency", pbase)
    if currency is None:
        raise missing(f"{pbase}[currency]")
    currency = currency_code(currency, f"{pbase}[currency]")
    if "unit_amount" not in price:
        if "unit_amount_decimal" in price:
            raise invalid(
                "The Stripe stand-in only supports integer `unit_amount`.",
                f"{pbase}[unit_amount_decimal]",
            )
        raise missing(f"{pbase}[unit_amount]")
    unit_amount = integer(price["unit_amount"], f"{pbase}[unit_amount]")
    if unit_amount < 0:
        raise bad_integer(f"{pbase}[unit_amount]", "Invalid non-negative integer")
    if "product" in price:
        raise no_such("product", str(price["product"]), f"{pbase}[product]", status=400)
    if "product_data" not in price:
        raise missing(f"{pbase}[product_data]")
    dbase = f"{pbase}[product_data]"
    product = hash_(price["product_data"], dbase)
    check_known(product, PRODUCT_DATA_PARAMS, dbase)
    name = string(product, "name", dbase)
    if name is None:
        raise missing(f"{dbase}[name]")
    return LineItemSpec(
        quantity=quantity,
        currency=currency.lower(),
        unit_amount=unit_amount,
        product_name=name,
        product_description=string(product, "description", dbase),
        recurring=_recurring(price.get("recurring"), f"{pbase}[recurring]"),
        metadata=metadata(item.get("metadata"), f"{base}[metadata]"),
    )


def _recurring(value: Any, base: str) -> dict[str, Any] | None:
    if value is None:
        return None
    recurring = hash_(value, base)
    check_known(recurring, RECURRING_PARAMS, base)
    interval = string(recurring, "interval", base)
    if interval is None:
        raise missing(f"{base}[interval]")
    if interval not in INTERVALS:
        raise invalid(
            f"Invalid {base}[interval]: must be one of day, week, month, or year",
            f"{base}[interval]",
        )
    count = integer(recurring.get("interval_count", "1"), f"{base}[interval_count]")
    if count < 1:
        raise bad_integer(
            f"{base}[interval_count]", "This value must be greater than or equal to 1."
        )
    return {"interval": interval, "interval_count": count}


def _payment_intent_metadata(value: Any, mode: str) -> dict[str, str]:
    if value is None:
        return {}
    if mode != "payment":
        raise invalid(
            "You can only specify `payment_intent_data` in `payment` mode.", "payment_intent_data"
        )
    data = hash_(value, "payment_intent_data")
    check_known(data, PAYMENT_INTENT_DATA_PARAMS, "payment_intent_data")
    return metadata(data.get("metadata"), "payment_intent_data[metadata]")


def _expires_at(value: Any, now: int, min_expiry_seconds: int) -> int:
    if value is None:
        return now + MAX_EXPIRY_SECONDS
    expires_at = integer(value, "expires_at")
    if expires_at < now + min_expiry_seconds:
        shortest = (
            "30 minutes"
            if min_expiry_seconds == MIN_EXPIRY_SECONDS
            else f"{min_expiry_seconds} seconds (this stand-in's test minimum)"
        )
        raise invalid(
            f"The `expires_at` timestamp must be at least {shortest} from Checkout Session "
            "creation.",
            "expires_at",
        )
    if expires_at > now + MAX_EXPIRY_SECONDS:
        raise invalid(
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            "expires_at",
        )
    return expires_at


def _client_reference_id(params: dict[str, Any]) -> str | None:
    value = string(params, "client_reference_id")
    if value is not None and len(value) > 200:
        raise invalid(
            "Invalid client_reference_id: must be at most 200 characters", "client_reference_id"
        )
    return value


def _customer_email(params: dict[str, Any]) -> str | None:
    if "customer" in params and "customer_email" in params:
        raise invalid("You may only specify one of these parameters: customer, customer_email.")
    if "customer" in params:
        # No Customer objects exist here, so any id is unknown (as Stripe says for a new account).
        raise no_such("customer", str(params["customer"]), "customer", status=400)
    return string(params, "customer_email")


def _check_total(request: CreateRequest) -> None:
    total = request.amount_total or 0
    currency = request.currency or ""
    if total > MAX_AMOUNT:
        raise invalid(
            "The Checkout Session's total amount due must be no more than "
            f"{format_amount(MAX_AMOUNT, currency)}.",
            "line_items",
        )
    minimum = MIN_CHARGE.get(currency)
    if minimum is not None and total < minimum:
        raise invalid(
            "The Checkout Session's total amount due must add up to at least "
            f"{format_amount(minimum, currency)} {currency}",
            "line_items",
        )


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)

"""Card details typed on the hosted page, checked as Stripe checks them in test mode.

Stripe's test numbers behave as documented (https://docs.stripe.com/testing): 4242 4242 4242
4242 succeeds, 4000 0000 0000 0002 is declined, and so on. A well-formed number that is not a
test number is declined as Stripe declines a real card in test mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from stripe_standin.errors import StripeError

_DECLINED = "Your card was declined."


@dataclass(frozen=True)
class Card:
    """A card that was accepted: what a Charge's ``payment_method_details.card`` shows."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int
    name: str | None


# The numbers that succeed, with their brand.
SUCCEEDING = {
    "4242424242424242": "visa",
    "4000056655665556": "visa",
    "5555555555554444": "mastercard",
    "2223003122003222": "mastercard",
    "5200828282828210": "mastercard",
    "5105105105105100": "mastercard",
    "378282246310005": "amex",
    "371449635398431": "amex",
    "6011111111111117": "discover",
    "6011000990139424": "discover",
    "3056930009020004": "diners",
    "36227206271667": "diners",
    "3566002020360505": "jcb",
    "6200000000000005": "unionpay",
}

# Numbers that are declined: (code, decline_code, message), as the API reports them.
DECLINING = {
    "4000000000000002": ("card_declined", "generic_decline", _DECLINED),
    "4000000000009995": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "4000000000009987": ("card_declined", "lost_card", _DECLINED),
    "4000000000009979": ("card_declined", "stolen_card", _DECLINED),
    "4000000000000069": ("expired_card", "expired_card", "Your card has expired."),
    "4000000000000127": (
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
    "4000000000000119": (
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
}

_EXPIRY = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")


def card_error(
    message: str, code: str, param: str | None = None, decline_code: str | None = None
) -> StripeError:
    """A 402 ``card_error``, as Stripe answers a card it will not charge."""
    return StripeError(
        402, message, type_="card_error", code=code, param=param, decline_code=decline_code
    )


def digits(value: str) -> str:
    """The number without the spaces and dashes people type."""
    return re.sub(r"[\s-]", "", value)


def luhn_valid(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _brand(number: str) -> str:
    if number in SUCCEEDING:
        return SUCCEEDING[number]
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if "51" <= number[:2] <= "55" or "2221" <= number[:4] <= "2720":
        return "mastercard"
    return "unknown"


def _number(value: str) -> str:
    number = digits(value)
    if not number:
        raise card_error("Your card number is incomplete.", "incomplete_number", "card_number")
    if not number.isdigit():
        raise card_error("Your card number is invalid.", "invalid_number", "card_number")
    if len(number) < 14:
        raise card_error("Your card number is incomplete.", "incomplete_number", "card_number")
    if len(number) > 19 or not luhn_valid(number):
        raise card_error("Your card number is invalid.", "invalid_number", "card_number")
    return number


def _expiry(value: str, now: datetime) -> tuple[int, int]:
    match = _EXPIRY.match(value)
    if match is None:
        raise card_error(
            "Your card's expiration date is incomplete.", "incomplete_expiry", "card_expiry"
        )
    month, year = int(match.group(1)), int(match.group(2))
    year = year + 2000 if year < 100 else year
    if not 1 <= month <= 12:
        raise card_error(
            "Your card's expiration month is invalid.", "invalid_expiry_month", "card_expiry"
        )
    if (year, month) < (now.year, now.month):
        raise card_error(
            "Your card's expiration date is in the past.", "invalid_expiry_year", "card_expiry"
        )
    if year > now.year + 50:
        raise card_error(
            "Your card's expiration year is invalid.", "invalid_expiry_year", "card_expiry"
        )
    return month, year


def check_card(number: str, expiry: str, cvc: str, name: str | None) -> Card:
    """The card if Stripe would charge it; else a ``card_error`` with Stripe's message.

    ``name=None``: not asked for (a script); an empty name is refused.
    """
    clean = _number(number)
    month, year = _expiry(expiry, datetime.now(UTC))
    brand = _brand(clean)
    cvc = cvc.strip()
    wanted = 4 if brand == "amex" else 3
    if not cvc.isdigit() or len(cvc) != wanted:
        raise card_error("Your card's security code is incomplete.", "incomplete_cvc", "card_cvc")
    if name is not None and not name.strip():
        raise StripeError(400, "Enter the name on your card.", param="card_name")
    declined = DECLINING.get(clean)
    if declined is not None:
        code, decline_code, message = declined
        raise card_error(message, code, decline_code=decline_code)
    if clean not in SUCCEEDING:
        raise card_error(
            "Your card was declined. Your request was in test mode, but used a non test card. "
            "For a list of valid test cards, visit: https://stripe.com/docs/testing.",
            "card_declined",
            decline_code="test_mode_live_card",
        )
    return Card(brand, clean[-4:], month, year, name.strip() if name else None)


TEST_CARD = Card("visa", "4242", 12, 2034, None)
"""What a script's ``POST <checkout_url>/pay`` without card details pays with."""

"""Bounds of what commands carry, in a module of their own: the settings, the CLI and the
HTTP schemas check them before loading the domain, which checks them again."""

import re

MAX_MONTHLY_ALLOWANCE = 1_000_000_000
"""The views hold credits as PostgreSQL bigints: every bucket is bounded where it is filled."""

MIN_CREDITS = 100
MAX_CREDITS = 10_000
"""What one purchase buys."""

MAX_CHECKOUT_AMOUNT = 99_999_999
"""The most Stripe takes in one payment, in the currency's minor unit (eight digits)."""

MAX_CREDIT_UNIT_AMOUNT = MAX_CHECKOUT_AMOUNT // MAX_CREDITS
"""The highest price of a credit at which the largest purchase can still be paid."""

MAX_PRIORITY = 100
DEFAULT_PRIORITY = 50
"""A grant's priority (the lowest is spent first) and the one it has unless given."""

MAX_REASON_LENGTH = 500
"""Characters of a reason (a spend's, a grant's): shown on statements and notifications."""

IDEMPOTENCY_KEY_MAX = 255
IDEMPOTENCY_KEY_PATTERN = "^[ -~]+$"
"""Printable ASCII, as the ``Idempotency-Key`` header admits it (and ``--key`` on the CLI)."""
IDEMPOTENCY_KEY_RULE = f"1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"
"""What a key must be, in the words of the refusals of one that is not."""

_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def is_idempotency_key(key: str) -> bool:
    """Whether ``key`` is an idempotency key (``IDEMPOTENCY_KEY_RULE``): the one check of the
    ``Idempotency-Key`` header outside Litestar's (api/validation.py) and of ``--key``.

    The whole key must match: ``$`` also matches before a last newline, which the header's
    value cannot end with (an HTTP header line ends there) but an argument can."""
    return 0 < len(key) <= IDEMPOTENCY_KEY_MAX and _IDEMPOTENCY_KEY.fullmatch(key) is not None

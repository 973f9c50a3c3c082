"""Bounds of what commands carry, in a module of their own: the settings, the CLI and the
HTTP schemas check them before loading the domain, which checks them again."""

MAX_MONTHLY_ALLOWANCE = 1_000_000_000
"""The views hold credits as PostgreSQL bigints: every bucket is bounded where it is filled."""

MAX_REASON_LENGTH = 500
"""Characters of a reason (a spend's, a grant's): shown on statements and notifications."""

IDEMPOTENCY_KEY_MAX = 255
IDEMPOTENCY_KEY_PATTERN = "^[ -~]+$"
"""Printable ASCII, as the ``Idempotency-Key`` header admits it (and ``--key`` on the CLI)."""

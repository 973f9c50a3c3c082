"""When a call is sent again, and how long the client waits first.

The rule:

* **Never a 4xx**: the answer will not change by asking again (402, 409, 422 are decisions).
* **5xx (503 included) and lost answers** (a read timeout, a dropped connection) only
  for operations that are safe to repeat: reads, and writes the service deduplicates by
  their ``Idempotency-Key`` (the client sends the same key on every attempt of one
  call: spends, holds, grants, voids, monthly resets, purchases, webhook endpoints).
  Opening an account might have taken effect: sending it again would answer 409.
  A 503 does not say
  otherwise: the service also answers it to a command a forced stop cut off after its
  commit ("The server is stopping", api/edge.py), and when the database connection
  drops during a commit, whose outcome it cannot know.
* **A connection that was never made** (refused, connect timeout, no free connection
  in the pool) always: the service never saw the request.

The wait doubles from ``backoff`` up to ``max_backoff`` seconds, each wait drawn at
random from its upper half (so callers that failed together do not come back
together); a ``Retry-After`` longer than that is waited instead, and one longer than
``max_backoff`` is not waited at all: the error goes to the caller.
"""

from __future__ import annotations

import random

import httpx

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before the request left: always safe to send again."""


def retries_status(status: int, *, repeatable: bool) -> bool:
    """Whether an answer with ``status`` is worth another attempt."""
    return repeatable and status >= 500


def retries_failure(error: httpx.TransportError, *, repeatable: bool) -> bool:
    """Whether a call that got no answer is worth another attempt."""
    return repeatable or isinstance(error, NOT_SENT)


def delay(
    attempt: int,
    *,
    backoff: float,
    max_backoff: float,
    retry_after: float | None = None,
    rand: random.Random | None = None,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0).

    None when the service asks for a longer wait than ``max_backoff``.
    """
    if retry_after is not None and retry_after > max_backoff:
        return None
    ceiling = min(max_backoff, backoff * 2.0**attempt)
    uniform = rand.uniform if rand is not None else random.uniform
    jittered = ceiling / 2 + uniform(0, ceiling / 2)
    return max(jittered, retry_after or 0.0)

"""What the client raises: one class per kind of answer a caller handles differently.

Every error answer of the service is ``{"message": ...}`` (422 adds ``"errors"``, one
list of messages per bad field); each exception carries that body and the status.

::

    LedgerError
    ├── ApiError                 an error answer (status, message, errors)
    │   ├── Unauthorized         401, and 403 as its subclass Forbidden
    │   ├── InsufficientCredits  402: nothing was recorded
    │   ├── NotFound             404
    │   ├── Conflict             409
    │   ├── ValidationError      422, with ``errors``
    │   └── ServerError          5xx
    │       └── ServiceUnavailable  503, with ``retry_after``
    ├── ConnectionFailed         no answer (after the retries)
    └── UnexpectedAnswer         an answer that is not what the operation documents
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import msgspec


class LedgerError(Exception):
    """Anything the client raises."""

    idempotency_key: str | None = None
    """The ``Idempotency-Key`` a keyed write sent (yours, or the one made for the call).

    After a ``ConnectionFailed`` or a ``ServerError`` the write may have been recorded:
    call again with this key, and it is recorded once (the first answer comes back).
    None for a call that takes no key."""


class ApiError(LedgerError):
    """The service answered with an error status."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: dict[str, list[str]] | None = None,
        *,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.errors: dict[str, list[str]] = errors or {}
        self.headers = headers if headers is not None else httpx.Headers()

    @property
    def body(self) -> dict[str, object]:
        """The answer's body as the contract shapes it: ``{"message"}`` plus ``"errors"`` if any."""
        body: dict[str, object] = {"message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body

    @property
    def request_id(self) -> str | None:
        """The service's ``X-Request-Id`` for this answer, to find it in the service's logs."""
        found: str | None = self.headers.get("X-Request-Id")
        return found


class Unauthorized(ApiError):
    """401: no token, or an unknown or revoked one (403, ``Forbidden``: the wrong scope)."""


class Forbidden(Unauthorized):
    """403: the token's scope does not allow this."""


class InsufficientCredits(ApiError):
    """402: the balance (or what holds leave available) is short; nothing was recorded."""


class NotFound(ApiError):
    """404: no such account, hold, grant or endpoint."""


class Conflict(ApiError):
    """409: the account exists, the period has passed, the hold or grant is settled."""


class ValidationError(ApiError):
    """422: ``errors`` holds each bad field's messages (``Idempotency-Key`` for a reused key)."""


class ServerError(ApiError):
    """5xx: the service failed (retried while the client's retries last)."""


class ServiceUnavailable(ServerError):
    """503: the database is unavailable, the account stayed busy, or the server is stopping.

    Usually nothing was recorded, but not always (a command a stopping server cut off
    after its commit): send a keyed write again with its ``idempotency_key``.

    ``retry_after`` is the service's ``Retry-After`` in seconds (None when absent).
    """

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers.get("Retry-After"))


class ConnectionFailed(LedgerError):
    """No answer: the connection failed or timed out, on the last of the retries."""


class UnexpectedAnswer(LedgerError):
    """A success status whose body is not the documented answer (a proxy's page, a newer API)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    402: InsufficientCredits,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: ValidationError,
    503: ServiceUnavailable,
}


class _ErrorAnswer(msgspec.Struct, frozen=True):
    message: str = ""
    errors: dict[str, list[str]] | None = None


def error_for(response: httpx.Response) -> ApiError:
    """The exception for an error answer; a body not in the contract's shape keeps its text."""
    try:
        answer = msgspec.json.decode(response.content, type=_ErrorAnswer)
        message, errors = answer.message, answer.errors
    except msgspec.DecodeError:
        message, errors = response.text[:500], None
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else ApiError
    return kind(
        response.status_code,
        message or response.reason_phrase,
        errors,
        headers=response.headers,
    )


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; None when unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())

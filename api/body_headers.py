"""What a request says of its body in its headers: JSON, sent as it is.

A body sent with ``Content-Encoding: gzip`` was decoded as if its compressed bytes
were the JSON, and one sent as a form or as text was read as JSON all the same. A
payments API answers neither with a guess: each is 415 in the contract's shape, before
the body is read as anything. No ``Content-Type`` at all is taken as JSON (the
contract: all bodies are JSON), so a client that leaves it out is not refused.

The Stripe webhook is not checked: the contract has it verify the signature on the raw
body, 400 when that fails and 200 for every verified event, so the bytes as sent are
verified whatever the headers call them (Stripe sends them uncompressed).

The check runs on every request with a body, the spend's too: a loop over the headers
testing each name against a set, about 5k instructions for a spend's nine headers
(callgrind; a spend is some 840k in process). A dict of them, or two comparisons a
header, cost more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import Scope

ENCODED = (
    "The request body must be sent as it is: a Content-Encoding (compression) is not accepted."
)
NOT_JSON_TYPE = "The request body must be JSON, sent with Content-Type: application/json."

_CONTENT_ENCODING = b"content-encoding"
_CONTENT_TYPE = b"content-type"
_JSON = b"application/json"
_IDENTITY = b"identity"
_BODY_HEADERS = frozenset((_CONTENT_TYPE, _CONTENT_ENCODING))


class UnsupportedBody(Exception):
    """The body is not sent as JSON as it is: answered 415 with the message."""


def body_refusal(scope: Scope) -> str | None:
    """Why the body is refused (None: it is not), from the request's headers."""
    for name, value in scope["headers"]:
        if name in _BODY_HEADERS:  # one test for nearly every header (see the module)
            if name == _CONTENT_ENCODING:
                if value.strip().lower() != _IDENTITY:
                    return ENCODED
            elif value != _JSON and not _names_json(value):
                return NOT_JSON_TYPE
    return None


def check_body_headers(scope: Scope) -> None:
    """Raise UnsupportedBody if ``body_refusal`` finds a reason."""
    if (refusal := body_refusal(scope)) is not None:
        raise UnsupportedBody(refusal)


def _names_json(content_type: bytes) -> bool:
    """Whether the media type is ``application/json``, in any case and with any parameters
    (``application/json; charset=utf-8``)."""
    return content_type.split(b";", 1)[0].strip().lower() == _JSON

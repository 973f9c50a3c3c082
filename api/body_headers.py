"""What a request says of its body in its headers: sent as it is.

A body sent with ``Content-Encoding: gzip`` was decoded as if its compressed bytes
were the JSON. A payments API answers that with no guess: 415 in the contract's shape,
before the body is read as anything; so is one sent with ``Transfer-Encoding: gzip,
chunked``, whose chunks the server takes apart, leaving what they hold compressed.
The ``Content-Type`` is not checked: the contract has every body JSON, and JSON sent as
``text/plain`` or as curl's default form type is still exactly one request (refusing it
would break clients over nothing ambiguous).

The Stripe webhook is not checked: the contract has it verify the signature on the raw
body, 400 when that fails and 200 for every verified event, so the bytes as sent are
verified whatever the headers call them (Stripe sends them uncompressed).

The check runs on every request with a body, the spend's too: a loop over the headers
testing each name, about 5k instructions for a spend's nine headers (callgrind; a spend
is some 840k in process). A dict of them cost more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import Scope

ENCODED = (
    "The request body must be sent as it is: a Content-Encoding (compression) is not accepted."
)
TRANSFER_CODED = (
    "The request body must be sent as it is: a Transfer-Encoding other than chunked "
    "is not accepted."
)

_CONTENT_ENCODING = b"content-encoding"
_TRANSFER_ENCODING = b"transfer-encoding"
_IDENTITY = b"identity"
_CHUNKED = b"chunked"


class UnsupportedBody(Exception):
    """The body is not sent as it is: answered 415 with the message."""


def body_refusal(scope: Scope) -> str | None:
    """Why the body is refused (None: it is not), from the request's headers."""
    for name, value in scope["headers"]:
        if name == _CONTENT_ENCODING and value.strip().lower() != _IDENTITY and coded(value):
            return ENCODED
        # The server takes chunks apart and hands on what they hold, compressed or not.
        if (
            name == _TRANSFER_ENCODING
            and value.strip().lower() != _CHUNKED
            and coded(value, _CHUNKED)
        ):
            return TRANSFER_CODED
    return None


def coded(codings: bytes, *also: bytes) -> bool:
    """Whether a ``Content-Encoding`` (or ``Transfer-Encoding``, with ``also`` chunked)
    names a coding other than identity. It is a list (RFC 9110, 8.4) whose empty elements
    count for nothing: an empty one, or ``identity, identity``, says the body is sent as it
    is."""
    return any(
        coding.strip().lower() not in (b"", _IDENTITY, *also) for coding in codings.split(b",")
    )


def check_body_headers(scope: Scope) -> None:
    """Raise UnsupportedBody if ``body_refusal`` finds a reason."""
    if (refusal := body_refusal(scope)) is not None:
        raise UnsupportedBody(refusal)

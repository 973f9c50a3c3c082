"""Request headers read straight from the ASGI scope.

``connection.headers`` builds a multi-dict of every header of the request; the
middleware, the guards and the express lane each want one header, on every
request, so they look it up in the scope's list instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import Scope


class RepeatedHeader(Exception):
    """A header the request gives twice with different values: which one the client meant
    is unknown, as with a field given twice in a JSON body."""


def first_header(scope: Scope, name: bytes) -> str | None:
    """The first header called ``name`` (lower-case bytes, as ASGI gives names), if any."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def only_header(scope: Scope, name: bytes) -> str | None:
    """The header called ``name`` (lower-case bytes), if any; ``RepeatedHeader`` when it
    comes again with another value (the same value again says nothing more)."""
    found: bytes | None = None
    for key, value in scope["headers"]:
        if key == name:
            if found is None:
                found = value
            elif value != found:
                raise RepeatedHeader(name.decode("latin-1"))
    return None if found is None else found.decode("latin-1")

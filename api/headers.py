"""Request headers read straight from the ASGI scope.

``connection.headers`` builds a multi-dict of every header of the request; the
middleware, the guards and the express lane each want one header, on every
request, so they look it up in the scope's list instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import Scope


def first_header(scope: Scope, name: bytes) -> str | None:
    """The first header called ``name`` (lower-case bytes, as ASGI gives names), if any."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None

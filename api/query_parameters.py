"""A query parameter given twice with different values (``?after=1&after=2``) says no one
thing: 422, as a body's field or a header given twice is. Litestar took the last.

A parameter named almost as one the route takes (``AS_OF``, ``as-of``, ``as_off``) is 422
too, naming the one meant: ignored, as every name a route does not take is, it answered
today's balance to an auditor who asked for another day's. Other names are still ignored
(a browser's or a proxy's cache-buster, ``_=123``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from litestar import Request
from litestar.params import QueryParameter

from api.validation import ValidationFailed, refuse_a_repeated_idempotency_key

_QUERY_NAMES: dict[object, frozenset[str]] = {}
"""Each route handler's query parameter names, read from its signature once (bounded: the
app's handlers)."""


def query_names(request: Request[Any, Any, Any]) -> frozenset[str]:
    """The query parameters the request's route takes, by the names the URL gives them."""
    handler = request.route_handler
    names = _QUERY_NAMES.get(handler)
    if names is None:
        names = _QUERY_NAMES[handler] = frozenset(
            field.kwarg_definition.query or name
            for name, field in handler.parsed_fn_signature.parameters.items()
            if isinstance(field.kwarg_definition, QueryParameter)
        )
    return names


def _folded(name: str) -> str:
    """``name`` as its near misses are compared: case, ``_`` and ``-`` left out."""
    return name.lower().replace("_", "").replace("-", "")


def _one_edit_apart(given: str, taken: str) -> bool:
    """Whether one letter added, left out, changed, or two swapped, makes ``given`` ``taken``."""
    if given == taken or abs(len(given) - len(taken)) > 1:
        return False
    start = 0
    while start < min(len(given), len(taken)) and given[start] == taken[start]:
        start += 1
    rest, wanted = given[start:], taken[start:]
    return (
        rest[1:] == wanted[1:]  # changed
        or rest[1:] == wanted  # added
        or rest == wanted[1:]  # left out
        or (rest[:2] == wanted[1::-1] and rest[2:] == wanted[2:])  # swapped
    )


def meant(name: str, taken: frozenset[str]) -> str | None:
    """The parameter of ``taken`` that ``name`` nearly names, or None (for one of them too):
    the same but for case, ``_`` and ``-``, or one letter off (of names of 3 letters or more)."""
    if name in taken:
        return None
    folded = _folded(name)
    for candidate in sorted(taken):
        wanted = _folded(candidate)
        if folded == wanted or (len(folded) >= 3 and _one_edit_apart(folded, wanted)):
            return candidate
    return None


def refuse_a_repeated_query_parameter(request: Request[Any, Any, Any]) -> None:
    """422 for a parameter the route takes given twice with different values, or for one
    it does not take that nearly names one it does (``meant``)."""
    query = request.scope["query_string"].decode("latin-1")
    if not query or not request.scope["path"].startswith("/v1/"):
        return  # the pages (the checkout's success page) answer people, not in JSON
    taken = query_names(request)
    if not taken:
        return
    seen: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in taken:
            if (intended := meant(name, taken)) is not None:
                raise ValidationFailed.single(
                    name, f"The {name} parameter is unknown; did you mean {intended}?"
                )
        elif seen.setdefault(name, value) != value:
            raise ValidationFailed.single(name, f"The {name} parameter must be given once.")


async def refuse_repeated_request_parts(request: Request[Any, Any, Any]) -> None:
    """The app's before-request hook (after the guards): a query parameter or the
    ``Idempotency-Key`` header given twice with different values is 422."""
    refuse_a_repeated_query_parameter(request)
    await refuse_a_repeated_idempotency_key(request)

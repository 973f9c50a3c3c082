"""A query parameter given twice with different values (``?after=1&after=2``) says no one
thing: 422, as a body's field or a header given twice is. Litestar took the last."""

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


def refuse_a_repeated_query_parameter(request: Request[Any, Any, Any]) -> None:
    query = request.scope["query_string"].decode("latin-1")
    if not query or not request.scope["path"].startswith("/v1/"):
        return  # the pages (the checkout's success page) answer people, not in JSON
    taken = query_names(request)
    seen: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in taken and seen.setdefault(name, value) != value:
            raise ValidationFailed.single(name, f"The {name} parameter must be given once.")


async def refuse_repeated_request_parts(request: Request[Any, Any, Any]) -> None:
    """The app's before-request hook (after the guards): a query parameter or the
    ``Idempotency-Key`` header given twice with different values is 422."""
    refuse_a_repeated_query_parameter(request)
    await refuse_a_repeated_idempotency_key(request)

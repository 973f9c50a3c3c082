"""Who may call what: bearer tokens checked once per request, scopes checked per audience.

Each router or route names the scopes it admits with a Litestar guard (``allow``,
``own_account_or``); the guard authenticates the token (a cache hit, normally)
and keeps the caller on the connection, where routes find it as ``principal``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard
from litestar.types import Scope as ASGIScope

from api.access.tokens import Principal, Scope, TokenService
from api.headers import RepeatedHeader, only_header

Caller = NamedDependency[Principal]
"""Declares a route's ``principal`` parameter as the authenticated caller."""

_PRINCIPAL = "ledger.principal"
_READ_METHODS = frozenset(("GET", "HEAD"))
"""Requests that command nothing: their token, if not in memory, is looked up with the
reads' connections (``TokenService.reads``)."""


class Unauthenticated(Exception):
    """No token, or one that is unknown or revoked (401)."""


class Forbidden(Exception):
    """A valid token whose scope does not allow this (403)."""


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token from ``Authorization: Bearer <token>``, if the header has that form and is
    not given again with another value."""
    return _bearer_token(connection.scope)


def _bearer_token(scope: ASGIScope) -> str | None:
    # Read from the raw headers: ``connection.headers`` builds a multi-dict of them all.
    try:
        header = only_header(scope, b"authorization") or ""
    except RepeatedHeader:  # two credentials: whose request this is is unknown
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _caller(scope: ASGIScope) -> Principal | Awaitable[Principal]:
    """The caller if known without waiting (checked already on this request, or a token the
    cache holds: ``TokenService.remembered``), else the token's lookup to wait for; no
    token: Unauthenticated. The header is read once either way."""
    state = scope.setdefault("state", {})  # type: ignore[typeddict-item]
    known: Principal | None = state.get(_PRINCIPAL)
    if known is not None:
        return known
    token = _bearer_token(scope)
    if token is None:
        raise Unauthenticated
    tokens: TokenService = scope["litestar_app"].state["services"].tokens
    if (known := tokens.remembered(token)) is not None:
        state[_PRINCIPAL] = known
        return known
    return _looked_up(tokens, token, scope, state)


async def _looked_up(
    tokens: TokenService, token: str, scope: ASGIScope, state: dict[str, Any]
) -> Principal:
    """The caller of a token the cache does not hold, looked up; or Unauthenticated."""
    reads_only = scope.get("method") in _READ_METHODS
    principal = await tokens.looked_up(token, for_read=reads_only)
    if principal is None:
        raise Unauthenticated
    state[_PRINCIPAL] = principal
    return principal


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller (checked once per request), or Unauthenticated."""
    principal = _caller(connection.scope)
    return principal if isinstance(principal, Principal) else await principal


def authenticated(scope: ASGIScope) -> Principal:
    """The caller a guard authenticated on this request."""
    principal: Principal = scope["state"][_PRINCIPAL]  # type: ignore[typeddict-item]
    return principal


ScopeCheck = Callable[[ASGIScope], Awaitable[None] | None]
"""A guard's check of a request made from its scope alone: None when it is admitted at
once, else what to wait for (a token looked up); Unauthenticated or Forbidden when not."""


class ScopeGuard:
    """A Litestar guard that is a ``ScopeCheck`` too: the express lane (api/express.py)
    checks its requests with ``check`` without the ``ASGIConnection`` and the coroutine
    Litestar's guard call takes (~1.5 % of a spend, callgrind)."""

    __slots__ = ("check",)

    def __init__(self, check: ScopeCheck) -> None:
        self.check = check

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        if (waiting := self.check(connection.scope)) is not None:
            await waiting


async def _then_of(
    principal: Awaitable[Principal],
    admits: Callable[[Principal, ASGIScope], None],
    scope: ASGIScope,
) -> None:
    admits(await principal, scope)


def _guard(admits: Callable[[Principal, ASGIScope], None]) -> Guard:
    def check(scope: ASGIScope) -> Awaitable[None] | None:
        principal = _caller(scope)
        if not isinstance(principal, Principal):  # not known at once: looked up
            return _then_of(principal, admits, scope)
        admits(principal, scope)
        return None

    return ScopeGuard(check)


def allow(*scopes: Scope) -> Guard:
    """A guard admitting tokens of ``scopes``."""

    def admits(principal: Principal, _: ASGIScope) -> None:
        if principal.scope not in scopes:
            raise Forbidden

    return _guard(admits)


def own_account_or(*scopes: Scope) -> Guard:
    """A guard admitting tokens of ``scopes``, and a customer's on its own account."""

    def admits(principal: Principal, scope: ASGIScope) -> None:
        if principal.scope is Scope.CREDITS:
            if principal.account_id != scope["path_params"].get("account_id"):
                raise Forbidden
        elif principal.scope not in scopes:
            raise Forbidden

    return _guard(admits)


async def provide_principal(
    request: Request[Any, Any, Any], services: NamedDependency[Any]
) -> Principal:
    """The caller a guard authenticated (routes without a guard have none).

    It names ``services`` so that Litestar resolves the two one after the other:
    dependencies it may resolve side by side cost a task group (two tasks) per request.
    """
    return await authenticate(request)


def customer_account(principal: Principal) -> str:
    """The account a ``credits`` token is bound to."""
    assert principal.account_id is not None  # the database's CHECK guarantees it
    return principal.account_id

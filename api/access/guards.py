"""Bearer tokens in, a Principal out; scopes checked per route."""

from __future__ import annotations

from litestar import Request
from litestar.di import NamedDependency

from api.access.tokens import Principal, Scope, TokenService

Caller = NamedDependency[Principal]
"""Declares a route's ``principal`` parameter as the authenticated caller."""


class Unauthenticated(Exception):
    """No token, or one that is unknown or revoked (401)."""


class Forbidden(Exception):
    """A valid token whose scope does not allow this (403)."""


def bearer_token(request: Request) -> str | None:
    """The token from ``Authorization: Bearer <token>``, if the header has that form."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(request: Request, tokens: TokenService) -> Principal:
    """The caller, or Unauthenticated."""
    token = bearer_token(request)
    principal = await tokens.authenticate(token) if token else None
    if principal is None:
        raise Unauthenticated
    return principal


def require_scope(principal: Principal, *scopes: Scope) -> None:
    """Refuse a caller whose token has none of ``scopes``."""
    if principal.scope not in scopes:
        raise Forbidden


def customer_account(principal: Principal) -> str:
    """The account a ``credits`` token is bound to."""
    require_scope(principal, Scope.CREDITS)
    assert principal.account_id is not None  # the database's CHECK guarantees it
    return principal.account_id


def require_account_access(principal: Principal, account_id: str, *scopes: Scope) -> None:
    """Allow internal scopes on any account, and a customer only on its own."""
    if principal.scope is Scope.CREDITS and principal.account_id == account_id:
        return
    require_scope(principal, *scopes)

"""A path Litestar has not routed yet is routed in one frame, to Litestar's own answer
(api/routing.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar, asgi, get, post
from litestar._asgi import asgi_router
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import Receive, Scope, Send

from api.app import create_app
from api.routing import route_unseen_paths_in_one_frame
from api.settings import Settings

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", None)

ODD_PATHS = (
    "/",
    "/v1",
    "/v1/accounts/",
    "/v1/accounts/a/b/c/d/e",
    "/v1/accounts//spend",
    "/v1/accounts/acct 1/spend",
    "/v1/accounts/%2F/spend",
    "/nowhere",
    "/v1/accounts/a/holds/h",
    "/v1/accounts/a/holds/h/capture/again",
    "/numbers/12",
    "/numbers/-3",
    "/numbers/twelve",
    "/ids/0a8f8c1e-5f1c-4a9c-9d6e-1b2c3d4e5f60",
    "/ids/not-a-uuid",
    "/files/a/b/c.txt",
    "/files",
    "/static/app.js",
    "/static/deep/er/app.js",
    "/mounted",
    "/mounted/anything/below",
    "/pair/1/x",
    "/pair/y/x",
)


def routed_by(route: Callable[..., Any], path: str, method: str | None) -> object:
    """What routing ``path`` gives: its tuple, or the error's kind, status and headers."""
    try:
        return route(path=path, method=method)
    except HTTPException as error:
        return (type(error), error.status_code, error.headers)


def paths_of(app: Litestar) -> list[str]:
    """Each route's template filled in twice (other values each time), and the odd ones."""
    paths = list(ODD_PATHS)
    for route in app.routes:
        for filler in ("acct-1", "b-2"):
            path = route.path
            for definition in route.path_parameters.values():
                value = {int: "7", UUID: str(UUID(int=9))}.get(definition.type, filler)
                path = path.replace("{" + definition.full + "}", value)
            paths += [path, path + "/more"]
    return paths


async def _raw(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never called")


@get("/numbers/{n:int}", sync_to_thread=False)
def number(n: FromPath[int]) -> int:
    return n


@get("/ids/{i:uuid}", sync_to_thread=False)
def ident(i: FromPath[UUID]) -> str:
    return str(i)


@get("/files/{rest:path}", sync_to_thread=False)
def file(rest: FromPath[str]) -> str:
    return rest


@post("/pair/{a:int}/x", sync_to_thread=False)
def pair(a: FromPath[int]) -> int:
    return a


def odd_app() -> Litestar:
    """Routes of every kind the ledger's app has none of: typed and ``path`` parameters,
    a mount (``asgi``) and static files."""
    return Litestar(
        route_handlers=[
            number,
            ident,
            file,
            pair,
            asgi("/mounted", is_mount=True, copy_scope=True)(_raw),
            create_static_files_router(path="/static", directories=["."]),
        ]
    )


@pytest.mark.parametrize("make", [lambda: create_app(Settings()), odd_app], ids=["ledger", "odd"])
def test_every_path_and_method_is_routed_as_litestar_routes_it(
    make: Callable[[], Litestar],
) -> None:
    app = make()
    if app.asgi_router.handle_routing.__wrapped__.__module__ != "api.routing":
        route_unseen_paths_in_one_frame(app)
    router = app.asgi_router
    quick = router.handle_routing.__wrapped__  # not its cache: every call routes anew
    assert sum(isinstance(route, HTTPRoute) for route in app.routes) >= 4
    compared = 0
    for path in paths_of(app):
        for method in METHODS:
            assert routed_by(quick, path, method) == routed_by(
                router._handle_routing, path, method
            ), (path, method)
            compared += 1
    assert compared > 400


def test_the_ledgers_unseen_paths_are_routed_without_litestars_traversal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Litestar's own routing of an unseen path: three frames and a cache an id never hits,
    # ~24.5k instructions; in one frame ~14.5k with the cache (callgrind).
    app = create_app(Settings())
    walked: list[str] = []
    litestar_walk = asgi_router.parse_path_to_route

    def noted(**given: Any) -> Any:
        walked.append(given["path"])
        return litestar_walk(**given)

    monkeypatch.setattr(asgi_router, "parse_path_to_route", noted)
    route = app.asgi_router.handle_routing
    spend = route(path="/v1/accounts/acct-42/spend", method="POST")
    capture = route(path="/v1/accounts/acct-42/holds/h-1/capture", method="POST")
    balance = route(path="/v1/accounts/acct-43/credits", method="GET")
    plain = route(path="/healthz", method="GET")  # Litestar's: a plain route
    with pytest.raises(HTTPException) as wrong_method:  # Litestar's 405
        route(path="/v1/accounts/acct-42/spend", method="GET")

    assert walked == ["/healthz", "/v1/accounts/acct-42/spend"]
    assert spend[2:] == (
        "/v1/accounts/acct-42/spend",
        {"account_id": "acct-42"},
        "/v1/accounts/{account_id}/spend",
    )
    assert capture[3] == {"account_id": "acct-42", "hold_id": "h-1"}
    assert balance[3:] == ({"account_id": "acct-43"}, "/v1/accounts/{account_id}/credits")
    assert plain[2:] == ("/healthz", {}, "/healthz")
    assert wrong_method.value.status_code == 405
    assert route(path="/v1/accounts/acct-42/spend", method="POST") is spend  # kept

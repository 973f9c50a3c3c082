"""Litestar's routing of a path it has not seen yet, in fewer frames.

Litestar keeps the last 1,024 paths it routed (``ASGIRouter.handle_routing``, an
``lru_cache``); a path it has not seen goes through ``parse_path_to_route``: a frame for
the walk down its route trie (and one for its list of the path's parts), one for the
node's handlers, and an ``lru_cache`` of the path's parameters keyed by their values,
which an account's id never hits. Every account has its own paths, so most commands and
reads are such a path: ~24.5k instructions each, of a spend's ~430k (callgrind).

``route_unseen_paths_in_one_frame`` gives the router a function that walks the same trie
in one frame and hands Litestar's own routing everything it does not take as it is: a
plain route, a mount, a ``path`` parameter, no route, no handler for the method (404,
405 and their headers are Litestar's), a value its parameter's parser refuses.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from litestar._asgi.routing_trie.types import PathParameterSentinel

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Method, RouteHandlerType

Routed = tuple["ASGIApp", "RouteHandlerType", str, dict[str, Any], str]
"""What ``ASGIRouter.handle_routing`` gives: the route's app, its handler, the path, the
path's parameters and the route's template."""

ROUTES_KEPT = 1024
"""Paths routed kept in memory, as many as Litestar's own cache keeps."""


def route_unseen_paths_in_one_frame(app: Litestar) -> None:
    """Route ``app``'s paths as its router does (see the module); paths seen lately are
    still found in an ``lru_cache`` of the same size as Litestar's."""
    router = app.asgi_router
    litestar_routing = router._handle_routing  # the router's own, not cached
    root = router.root_route_map_node
    sentinel = PathParameterSentinel

    def handle_routing(path: str, method: Method | None) -> Routed:
        # The same order as parse_path_to_route: plain routes, then mounts, then the trie.
        if path in router._plain_routes:
            return litestar_routing(path, method)
        mounts = router._mount_paths_regex
        if mounts is not None and mounts.match(path):
            return litestar_routing(path, method)
        node = root
        values = []
        for part in path.split("/"):
            if not part:
                continue
            if part in node.child_keys:
                node = node.children[part]
            elif node.is_path_param_node:
                node = node.children[sentinel]
                if node.is_path_type:  # the rest of the path, normalized: Litestar's
                    return litestar_routing(path, method)
                values.append(part)
            else:  # no route: Litestar's 404
                return litestar_routing(path, method)
        handlers = node.asgi_handlers
        if node.is_asgi or not method or method not in handlers:  # Litestar's 404 or 405
            return litestar_routing(path, method)
        asgi_app, handler = handlers[method]
        definitions = node.path_parameters[method]
        if len(definitions) != len(values):  # never for a route's own template: Litestar's
            return litestar_routing(path, method)
        parameters: dict[str, Any] = {}
        index = 0  # not zip() nor enumerate(): an object fewer (zip's strict= ~1.7k a path)
        for definition in definitions:
            value = values[index]
            index += 1  # noqa: SIM113
            if (parse := definition.parser) is not None:
                try:
                    value = parse(value)
                except ValueError:  # Litestar's 404
                    return litestar_routing(path, method)
            parameters[definition.name] = value
        return asgi_app, handler, path, parameters, node.path_template

    router.handle_routing = lru_cache(ROUTES_KEPT)(handle_routing)  # type: ignore[method-assign]

"""The Litestar application: the composition root."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.routes import HTTPRoute
from litestar.types import ExceptionHandlersMap

from api.access.guards import provide_principal
from api.database import (
    POOL_WAIT_SECONDS,
    DatabaseUnusable,
)
from api.edge import answered_requests
from api.errors import EXCEPTION_HANDLERS
from api.expiry import SWEEP_SECONDS, ExpirySweeper
from api.metrics import MetricsAccess, metrics_port_only
from api.openapi import conform, openapi_config
from api.query_parameters import refuse_repeated_request_parts
from api.read_side import consistency_headers
from api.reconcile import PeriodicReconciler
from api.routes import (
    account_page,
    auditors,
    checkout_pages,
    customers,
    grants,
    holds,
    internal,
    operations,
    stripe_webhook,
    webhook_endpoints,
)
from api.routing import route_unseen_paths_in_one_frame
from api.services import Services, open_services
from api.settings import Settings
from ledger.clock_guard import CHECK_SECONDS
from ledger.ports import Clock, system_clock
from ledger.store.failures import database_failure

log = logging.getLogger("ledger")

MAX_BODY_BYTES = 256 * 1024


def create_app(
    settings: Settings,
    *,
    development_extras: bool = False,
    express_lane: bool = True,
    clock: Clock = system_clock,
    sweep_seconds: float = SWEEP_SECONDS,
    clock_check_seconds: float = CHECK_SECONDS,
) -> Litestar:
    """The API. ``development_extras`` runs the Stripe stand-in and the demo account;
    ``express_lane=False`` answers every request through Litestar alone (api/express.py;
    the tests compare the two); ``clock``: the commands' (the tests set it apart from the
    database's, ledger/clock_guard.py). ``sweep_seconds`` and ``clock_check_seconds``: how
    often the expiry sweep (api/expiry.py) and the clock check run in the background; the
    instruction count of a request (bench/spend_instructions.py) makes them rare, as work
    that comes per second of wall time and not per request.

    The projector is not part of it: ``ledger serve`` runs it as a process of its own.
    """

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stripe_api_base = settings.stripe_api_base
            if development_extras and settings.uses_standin and not stripe_api_base:
                from api.development import start_stripe_standin

                stripe_api_base = await stack.enter_async_context(start_stripe_standin(settings))
            try:
                services = await stack.enter_async_context(
                    open_services(
                        settings,
                        stripe_api_base=stripe_api_base,
                        pool_wait=POOL_WAIT_SECONDS,
                        clock=clock,
                    )
                )
            except Exception as error:
                # Said in one line, and the server stops (api/startup.py): raised, it
                # would be Litestar's traceback of the failed start-up. Also a statement
                # refused (a role without rights on the tables) or the server gone meanwhile.
                said = (
                    str(error) if isinstance(error, DatabaseUnusable) else database_failure(error)
                )
                if said is None:
                    raise
                log.error("cannot start: %s", said)
                app.state.start_refused = True
                yield
                return
            app.state.services = services
            await services.tokens.watch_revocations(services.database_url)
            stack.push_async_callback(services.tokens.stop_watching)
            services.ledger.uow.committer.start()  # stopped as open_services ends
            # Measured once already (open_services); again every clock_check_seconds.
            services.ledger.clock_guard.start(services.pool, clock_check_seconds)
            stack.push_async_callback(services.ledger.clock_guard.stop)
            sweeper = ExpirySweeper(services.views, services.ledger, sweep_seconds)
            sweeper.start()
            stack.push_async_callback(sweeper.stop)
            if reconciler := PeriodicReconciler.from_env(services):  # LEDGER_RECONCILE_SECONDS
                reconciler.start()
                stack.push_async_callback(reconciler.stop)
            if settings.production:
                from api.development import revoke_demo_tokens

                await revoke_demo_tokens(services)
            elif development_extras and app.state.get("demo_account_here", True):
                from api.development import ensure_demo_account

                await ensure_demo_account(services, settings)
            yield

    def provide_services(request: Request[Any, Any, Any]) -> Services:
        return request.app.state["services"]  # type: ignore[no-any-return]

    metrics_access = MetricsAccess(port=settings.metrics_port, token=settings.metrics_token)
    app = Litestar(
        route_handlers=[
            customers.CUSTOMERS,
            internal.INTERNAL,
            holds.HOLDS,
            grants.GRANTS,
            webhook_endpoints.NOTIFICATIONS,
            auditors.AUDITORS,
            stripe_webhook.stripe_webhook,
            *operations.ROUTES,
            *checkout_pages.ROUTES,
            *account_page.ROUTES,
        ],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "principal": Provide(provide_principal),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=refuse_repeated_request_parts,
        lifespan=[lifespan],
        openapi_config=openapi_config(),
        debug=False,
        # Logging belongs to the process (the CLI configures it), not to the app.
        logging_config=None,
        middleware=[metrics_port_only(metrics_access), consistency_headers],
        # Every body here is a small JSON document; Stripe's events stay far below this.
        request_max_body_size=MAX_BODY_BYTES,
        cors_config=(
            CORSConfig(allow_origins=list(settings.cors_origins), allow_headers=["*"])
            if settings.cors_origins
            else None
        ),
    )
    app.state.metrics_access = metrics_access
    app.state.express_lane = express_lane
    # Around the whole app, not as its middleware: Litestar answers a path it does not
    # know (404) or a method a path does not take (405) before any middleware runs.
    app.asgi_handler = answered_requests(app.asgi_handler)
    answer_options_with_every_method(app)
    resolve_exception_handlers_once(app)
    route_unseen_paths_in_one_frame(app)
    conform(app)
    return app


def resolve_exception_handlers_once(app: Litestar) -> None:
    """Give each route handler the exception handlers it resolves, resolved once.

    Litestar 2's router asks the matched handler to ``resolve_exception_handlers()`` for
    every request: a new dict merged from the app's ~40 handlers and each layer's, ~1 % of
    a spend's instructions (bench/HISTORY.md). Litestar 3 resolves them once, as an
    attribute. The layers' maps are fixed once the app is built, and Litestar only reads the
    resolved one (its exception middleware looks the error up in it), so each handler gives
    the map it resolved now. Call after every route handler is in place.

    Litestar's own ``OPTIONS`` handlers (a plain ``HTTPRouteHandler``: slots, no instance
    attributes) keep resolving theirs per request.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not hasattr(handler, "__dict__"):
                continue
            handler.resolve_exception_handlers = _resolved(  # type: ignore[method-assign]
                handler.resolve_exception_handlers()
            )


def _resolved(handlers: ExceptionHandlersMap) -> Callable[[], ExceptionHandlersMap]:
    def resolve_exception_handlers() -> ExceptionHandlersMap:
        return handlers

    return resolve_exception_handlers


def answer_options_with_every_method(app: Litestar) -> None:
    """Give every path an ``OPTIONS`` answer that lists all its methods, without a token.

    Litestar 2 answers ``OPTIONS`` with a handler made for the first route handler
    registered on a path, which lists that one's methods only (litestar-org/litestar#4169,
    fixed in 3.0), and owned by its router, whose guards want a token (a CORS preflight
    has none). Each path gets one made for its route as it ended up, owned by the app.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        made, _ = route.route_handler_map["OPTIONS"]
        if made.handler_name != "options_handler":  # a route's own OPTIONS: none here yet
            continue
        answer = route.create_options_handler(route.path)
        answer.owner = app
        answer.on_registration(app)
        route.route_handlers[route.route_handlers.index(made)] = answer
        kwargs = answer.create_kwargs_model(path_parameters=route.path_parameters)
        route.route_handler_map["OPTIONS"] = (answer, kwargs)

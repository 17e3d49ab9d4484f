"""Which routes run the transaction middleware: decided once per route handler, when Litestar registers it.

A route that cannot reach a session pays nothing for the plugin. Litestar builds every route handler's
middleware stack when the route is registered (at app construction and for each later
``app.register(...)``), from the middleware of the app, routers, controller and handler. Just before
it builds the stacks, after it has worked out which providers each handler needs at every layer and
transitively, it hands each new route to the :class:`~litestar.plugins.ReceiveRoutePlugin` instances.
:class:`TransactionRoutes` is one: it prepends the transaction middleware to the own middleware of each
handler whose dependency graph contains one of the plugin's dependency keys (a session or an engine).
Every other handler's stack is exactly what it would be without the plugin: no
middleware, no context variable, no wrapped ``send``.

Where the middleware sits: inside app, router and controller middleware, outside middleware declared
on the handler itself (it used to sit with the app's middleware, outside router and controller
middleware too). It settles by the status that reaches it.

The dependency graph is the one Litestar resolves per request: the route's kwargs model (HTTP: one per
method, websocket: one per route), flattened into ``dependency_batches``. That attribute is private to
Litestar; :mod:`plugin._litestar` is the only place that reads it, ``tests/plugin/test_routes.py`` fails
when it changes, and a handler whose graph cannot be read is wrapped (correctness before cost). ASGI routes
(``@asgi``, mounts, static files) get no dependencies, so they are never wrapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import HTTPRoute, WebSocketRoute

from plugin._litestar import dependency_keys

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Set

    from litestar.handlers import BaseRouteHandler
    from litestar.middleware import DefineMiddleware
    from litestar.routes import BaseRoute

__all__ = ("TransactionRoutes", "needs_transaction")


def _handlers_and_graphs(route: BaseRoute) -> Iterator[tuple[BaseRouteHandler, Any]]:
    """Each route handler with the kwargs model Litestar resolves its arguments with (None if unknown)."""
    if isinstance(route, HTTPRoute):
        yield from route.route_handler_map.values()
    elif isinstance(route, WebSocketRoute):
        yield route.route_handler, route.handler_parameter_model


def needs_transaction(kwargs_model: Any, keys: Set[str]) -> bool:
    """Whether a handler's dependency graph contains one of ``keys``.

    ``kwargs_model`` is Litestar's resolved graph for the handler; when its shape is not the one this
    was written for, the answer is True, so the handler keeps its transaction.
    """
    found = dependency_keys(kwargs_model)
    return found is None or any(key in keys for key in found)


class TransactionRoutes(ReceiveRoutePlugin):
    """Adds the transaction middleware to exactly the route handlers that can reach the plugin's providers.

    One instance per app, added to the app's plugins by :func:`plugin.wiring.register`.
    """

    def __init__(self, middleware: DefineMiddleware, keys: Iterable[str]) -> None:
        self.middleware = middleware
        """The transaction middleware, as Litestar builds it into a handler's stack."""
        self.keys = frozenset(keys)
        """The plugin's dependency keys: a handler that can be given one of them is wrapped."""

    def receive_route(self, route: BaseRoute) -> None:
        """Decide for each handler of a newly registered route (Litestar builds its stack right after)."""
        for handler, kwargs_model in _handlers_and_graphs(route):
            own = handler.middleware or []
            # Adding a method to an existing path registers a new route holding the old handlers as
            # well: they were decided (and possibly wrapped) before, and must not be wrapped twice.
            if any(entry is self.middleware for entry in own):
                continue
            if needs_transaction(kwargs_model, self.keys):
                # A new list: the handler is a per-app copy, but its middleware list is shared with the
                # user's decorated handler object, which other apps may register too.
                handler.middleware = [self.middleware, *own]

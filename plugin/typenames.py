"""The type names the plugin lends to handler signatures, without ever hiding the user's own.

Handlers and providers often import ``AsyncSession``/``Session``/``Engine`` only under ``TYPE_CHECKING``;
their string annotations then resolve only if the app's ``signature_namespace`` names the types. But
Litestar resolves a callable's annotations in its module's globals *overlaid* by that namespace
(``litestar.utils.signature.get_fn_type_hints``), so a name put there wins over a class of the same name
that the handler's module defines: a user dataclass ``Session`` would be parsed as SQLAlchemy's.

So :func:`lend_names` lends a name app-wide only when no handler's or provider's module defines it as
something else; otherwise it lends it handler by handler, to those whose module does not define it.
Limits: a name that a *provider's* module defines itself is not lent at all (import SQLAlchemy's class
at runtime where you need it then), and handlers registered after the app is built
(``app.register(...)``) see only the app-wide names.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from litestar import Controller, Router
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from plugin.sessions import AsyncRoutingSession, RoutingSession

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar.config.app import AppConfig

__all__ = ("SIGNATURE_NAMESPACE", "lend_names")

SIGNATURE_NAMESPACE: Mapping[str, Any] = {
    "AsyncSession": AsyncSession,
    "Session": Session,
    "AsyncEngine": AsyncEngine,
    "Engine": Engine,
    "AsyncRoutingSession": AsyncRoutingSession,
    "RoutingSession": RoutingSession,
}


def _module_of(function: Any) -> str:
    while isinstance(function, partial):
        function = function.func
    return str(getattr(function, "__module__", ""))


def _provider_modules(dependencies: Any) -> Iterator[str]:
    if not isinstance(dependencies, Mapping):  # None, or a Controller class's unset slot
        return
    for provider in dependencies.values():
        yield _module_of(provider.dependency if isinstance(provider, Provide) else provider)


def _walk(layer: Any) -> Iterator[tuple[BaseRouteHandler | None, str]]:
    """``(handler, module)`` for every handler under ``layer``, and ``(None, module)`` for its providers."""
    yield from ((None, module) for module in _provider_modules(getattr(layer, "dependencies", None)))
    if isinstance(layer, BaseRouteHandler):
        yield layer, _module_of(layer.fn)
    elif isinstance(layer, Router):
        for route in layer.routes:
            for handler in getattr(route, "route_handlers", ()):
                yield from _walk(handler)
    elif isinstance(layer, type) and issubclass(layer, Controller):
        for value in vars(layer).values():
            if isinstance(value, BaseRouteHandler):
                yield from _walk(value)


def _defines_other(module_name: str, name: str, value: Any) -> bool:
    module = sys.modules.get(module_name)
    return module is not None and vars(module).get(name, value) is not value


def lend_names(app_config: AppConfig, names: Mapping[str, Any] = SIGNATURE_NAMESPACE) -> None:
    """Add ``names`` to the signatures of the app's handlers without hiding a name their module defines.

    A name no handler or provider module defines differently goes into the app's namespace. A name some
    handler's module defines as its own class goes only to the other handlers, each in its own
    namespace. A name some provider's module defines is not lent at all: providers resolve their
    annotations in the namespace of whichever handler uses them, where a lent name would hide theirs.
    """
    found = [item for layer in app_config.route_handlers for item in _walk(layer)]
    handlers = [(handler, module) for handler, module in found if handler is not None]
    providers = {module for handler, module in found if handler is None}
    providers.update(_provider_modules(app_config.dependencies))
    for name, value in names.items():
        if any(_defines_other(module, name, value) for module in providers):
            continue
        if not any(_defines_other(module, name, value) for _, module in handlers):
            app_config.signature_namespace.setdefault(name, value)
            continue
        for handler, module in handlers:
            if not _defines_other(module, name, value) and name not in handler.signature_namespace:
                # a new dict: the old one may be shared with copies Litestar made of this handler
                handler.signature_namespace = {**handler.signature_namespace, name: value}

"""The type names the plugin lends to handler signatures, without ever hiding the user's own.

Handlers and providers often import ``AsyncSession``/``Session``/``Engine`` only under ``TYPE_CHECKING``;
their string annotations then resolve only if the app's ``signature_namespace`` names the types. But
Litestar resolves a callable's annotations in its module's globals *overlaid* by that namespace
(``litestar.utils.signature.get_fn_type_hints``), so a name put there wins over a class of the same name
that the handler's module defines: a user dataclass ``Session`` would be parsed as SQLAlchemy's.

So a name is lent app-wide only when no module with a handler or provider of the app defines that name
as something else. A module that defines its own ``Session`` keeps it; in such an app, a module that
imports SQLAlchemy's ``Session`` only for type checking must import it at runtime (or list it in its own
handler's ``signature_namespace``), and Litestar says so at startup rather than guessing.
"""

from __future__ import annotations

import sys
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
    from collections.abc import Iterable, Iterator, Mapping

    from litestar.config.app import AppConfig

__all__ = ("SIGNATURE_NAMESPACE", "lendable_names")

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


def _provider_modules(dependencies: Mapping[str, Any] | None) -> Iterator[str]:
    for provider in (dependencies or {}).values():
        function = provider.dependency if isinstance(provider, Provide) else provider
        yield _module_of(function)


def _modules(layer: Any) -> Iterator[str]:
    """Modules of every handler and provider function reachable from ``layer``."""
    yield from _provider_modules(getattr(layer, "dependencies", None))
    if isinstance(layer, BaseRouteHandler):
        yield _module_of(layer.fn)
    elif isinstance(layer, Router):
        for route in layer.routes:
            for handler in getattr(route, "route_handlers", ()):
                yield from _modules(handler)
    elif isinstance(layer, type):  # a Controller (or listener) class: its methods live in its module
        yield layer.__module__
        if issubclass(layer, Controller):
            for value in vars(layer).values():
                if isinstance(value, BaseRouteHandler):
                    yield from _provider_modules(value.dependencies)


def _defines_other(module_name: str, name: str, value: Any) -> bool:
    module = sys.modules.get(module_name)
    return module is not None and vars(module).get(name, value) is not value


def lendable_names(app_config: AppConfig, names: Mapping[str, Any] = SIGNATURE_NAMESPACE) -> dict[str, Any]:
    """``names`` minus those some handler's or provider's module of the app defines as something else."""
    modules: Iterable[str] = {
        *_provider_modules(app_config.dependencies),
        *(module for layer in app_config.route_handlers for module in _modules(layer)),
    }
    return {name: value for name, value in names.items() if not any(_defines_other(m, name, value) for m in modules)}

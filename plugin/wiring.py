"""What the plugin registers on the app, and the lifespan that starts and disposes the engines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.di import Provide
from litestar.middleware import DefineMiddleware

# Imported at runtime, not for type checkers only: Litestar resolves the providers' annotations below in
# this module's globals, and the names lent to handlers may be withheld from a handler whose module
# defines its own Session or Engine.
from sqlalchemy import Engine  # noqa: TC002
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession  # noqa: TC002
from sqlalchemy.orm import Session  # noqa: TC002

from plugin.exceptions import DuplicateKeyError, LifecycleError
from plugin.middleware import InFlight, TransactionMiddleware, conflict_response, current_request_sessions, mark_raised
from plugin.routes import TransactionRoutes
from plugin.schema import create_all, create_all_sync
from plugin.twophase import require_two_phase, require_two_phase_sync
from plugin.typenames import lend_names

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.config.app import AppConfig

    from plugin.plugin import SQLAlchemyPlugin

__all__ = ("lifespan", "register")


def _session_provider(plugin: SQLAlchemyPlugin[Any], bind: str | None) -> Callable[[], AsyncSession | Session]:
    new_session = plugin.sessions.maker(bind)

    def provide_session() -> AsyncSession | Session:
        request_sessions = current_request_sessions()
        if request_sessions is None:
            raise LifecycleError(
                "a session was requested outside the plugin's middleware; register SQLAlchemyPlugin in "
                "Litestar(plugins=[...]) rather than adding its providers by hand"
            )
        session = new_session()
        request_sessions.sessions.append(session)
        return session

    return provide_session


def _engine_provider(plugin: SQLAlchemyPlugin[Any], bind: str) -> Callable[[], AsyncEngine | Engine]:
    def provide_engine() -> AsyncEngine | Engine:
        return plugin.engines.engine(bind)

    return provide_engine


def register(plugin: SQLAlchemyPlugin[Any], app_config: AppConfig) -> AppConfig:
    """Add providers, the transaction middleware (per route: plugin/routes.py), hooks, the lifespan, type names."""
    from plugin.plugin import SQLAlchemyPlugin

    others = [p for p in app_config.plugins if isinstance(p, SQLAlchemyPlugin) and p is not plugin]
    if others:
        raise DuplicateKeyError(
            "two SQLAlchemyPlugin instances are registered on one app, so their dependency keys and binds "
            "would clash; declare every database as a bind of one config"
        )
    config = plugin.config
    for key, what in config.dependency_keys():
        if key in app_config.dependencies:
            raise DuplicateKeyError(
                f"dependency key {key!r} ({what}) is already registered on the app; remove the app's "
                "own dependency or change session_key= / engine_key= in the config"
            )
    app_config.dependencies[config.session_key] = Provide(_session_provider(plugin, None), sync_to_thread=False)
    for bind in config.bind_configs:
        app_config.dependencies[config.engine_key_for(bind)] = Provide(
            _engine_provider(plugin, bind), sync_to_thread=False
        )
        if bind != config.default_bind:
            app_config.dependencies[config.session_key_for(bind)] = Provide(
                _session_provider(plugin, bind), sync_to_thread=False
            )
    # Not app middleware: only the handlers that can be given one of these keys get it (plugin/routes.py).
    in_flight = InFlight()
    middleware = DefineMiddleware(TransactionMiddleware, policy=config.transaction, in_flight=in_flight)
    if plugin.replicas is not None:  # decided here, once: apps without replicas keep the plain middleware
        from plugin.replica_middleware import ReplicaMiddleware
        from plugin.sticky import StickyCookie

        cookie = StickyCookie(config.sticky_cookie, config.sticky_secret) if config.sticky_secret else None
        middleware = DefineMiddleware(
            ReplicaMiddleware, policy=config.transaction, in_flight=in_flight, replicas=plugin.replicas, cookie=cookie
        )
    app_config.plugins.append(TransactionRoutes(middleware, (key for key, _ in config.dependency_keys())))
    if config.map_integrity_errors:
        app_config.exception_handlers.setdefault(IntegrityError, conflict_response)
    app_config.after_exception.append(mark_raised)
    # Litestar leaves its lifespan managers *before* it drains event listeners and runs on_shutdown
    # hooks, so the engines start in a lifespan manager but are disposed by an on_shutdown hook added
    # last: hooks and listeners the app registered can still use the database at shutdown.
    app_config.lifespan.append(lambda _app: _Lifespan(plugin, dispose_at_exit=False))
    app_config.on_shutdown.append(plugin.engines.dispose)
    lend_names(app_config)  # type names for string annotations, never hiding one the user's module defines
    return app_config


class _Lifespan:
    """Starts the engines, validates bind keys, creates tables if asked; disposes every engine at exit.

    ``async with`` for any config; plain ``with`` for sync configs (sync scripts).
    """

    def __init__(self, plugin: SQLAlchemyPlugin[Any], *, dispose_at_exit: bool = True) -> None:
        self._plugin = plugin
        self._dispose_at_exit = dispose_at_exit

    # start() comes before each try: when it refuses (the engines are already running), there is nothing
    # of ours to undo, and disposing would shut down the running app's engines.

    async def __aenter__(self) -> SQLAlchemyPlugin[Any]:
        plugin = self._plugin
        plugin.engines.start()
        try:
            plugin.router.validate()
            if plugin.config.two_phase:
                await require_two_phase(plugin.engines)
                plugin.engines.keep_finishing_in_doubt()
            if plugin.config.create_all:
                await create_all(plugin.engines, plugin.router)
        except BaseException:
            await plugin.engines.dispose()
            raise
        return plugin

    async def __aexit__(self, *exc_info: object) -> None:
        if self._dispose_at_exit:
            await self._plugin.engines.dispose()

    def __enter__(self) -> SQLAlchemyPlugin[Any]:
        plugin = self._plugin
        if plugin.config.is_async:
            raise LifecycleError("this config is async; use `async with plugin.lifespan():`")
        plugin.engines.start()
        try:
            plugin.router.validate()
            if plugin.config.two_phase:
                require_two_phase_sync(plugin.engines)
            if plugin.config.create_all:
                create_all_sync(plugin.engines, plugin.router)
        except BaseException:
            plugin.engines.dispose_sync()
            raise
        return plugin

    def __exit__(self, *exc_info: object) -> None:
        if self._dispose_at_exit:
            self._plugin.engines.dispose_sync()


def lifespan(plugin: SQLAlchemyPlugin[Any]) -> _Lifespan:
    """The context manager the app's lifespan enters; scripts and the CLI use the same one."""
    return _Lifespan(plugin)

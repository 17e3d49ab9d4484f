"""The engine registry: one engine per bind, created at startup, every one disposed at shutdown.

The registry has an explicit state (``unopened`` → ``open`` → ``closed``, and ``closed`` → ``open`` again
for apps started twice, as tests do); using it in the wrong state raises a
:class:`~plugin.exceptions.LifecycleError` that says which state it is in and what to do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Union

from sqlalchemy import create_engine
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from plugin.exceptions import (
    ConfigurationError,
    DriverMismatchError,
    DriverNotInstalledError,
    LifecycleError,
    mask_url,
    unknown_binds,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.engine import URL, Dialect, Engine

    from plugin.config import BindConfig, _SQLAlchemyConfig

__all__ = ("AnyEngine", "EngineRegistry")

logger = logging.getLogger("plugin.engines")

AnyEngine = Union["AsyncEngine", "Engine"]

# pip package for each SQLAlchemy driver name, where it differs or needs an extra.
_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg_async": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "mysqldb": "mysqlclient",
    "pysqlite": "the Python sqlite3 module (rebuild Python with SQLite support)",
}
# Drivers this project's extras install: `pip install 'litestar-alchemy[postgres]'`.
_EXTRAS = {"asyncpg": "postgres", "psycopg": "postgres", "asyncmy": "mariadb", "pymysql": "mariadb"}


def _dialect_class(key: str, url: URL) -> type[Dialect]:
    try:
        return url.get_dialect()
    except NoSuchModuleError:
        raise ConfigurationError(
            f"bind {key!r}: SQLAlchemy has no driver {url.drivername!r} ({mask_url(url)}); "
            "check the URL's dialect+driver part, e.g. postgresql+asyncpg or sqlite+aiosqlite"
        ) from None


class EngineRegistry:
    """Owns the engines of one config. Created unopened; :meth:`start` makes the engines."""

    def __init__(self, config: _SQLAlchemyConfig) -> None:
        self._config = config
        self._engines: dict[str, AnyEngine] = {}
        self._sync: dict[str, Engine] = {}
        self.state: Literal["unopened", "open", "closed"] = "unopened"

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Create (or adopt) every bind's engine. No connection is opened here.

        Raises:
            ConfigurationError: a driver is missing, of the wrong kind, or two-phase is asked of SQLite.
            LifecycleError: the engines are already started.
        """
        if self.state == "open":
            raise LifecycleError("the engines are already started; start them once (the app's lifespan does)")
        engines: dict[str, AnyEngine] = {}
        try:
            for key, bind in self._config.bind_configs.items():
                engines[key] = self._create(key, bind)
        except BaseException:
            for made in engines.values():
                (made.sync_engine if isinstance(made, AsyncEngine) else made).dispose()
            raise
        self._engines = engines
        self._sync = {k: e.sync_engine if isinstance(e, AsyncEngine) else e for k, e in engines.items()}
        self.state = "open"

    def _create(self, key: str, bind: BindConfig) -> AnyEngine:
        if bind.engine is not None:
            return bind.engine
        url = bind.resolved_url
        dialect = _dialect_class(key, url)
        is_async = self._config.is_async
        if bool(getattr(dialect, "is_async", False)) != is_async:
            wanted = (
                "an async driver such as sqlite+aiosqlite, postgresql+asyncpg or mysql+asyncmy"
                if is_async
                else "a sync driver such as sqlite, postgresql+psycopg or mysql+pymysql"
            )
            raise DriverMismatchError(
                f"bind {key!r}: driver {dialect.driver!r} is {'sync' if is_async else 'async'} but "
                f"{type(self._config).__name__} needs {wanted} ({mask_url(url)}); change the URL's driver "
                f"or use {'SQLAlchemySyncConfig' if is_async else 'SQLAlchemyAsyncConfig'}"
            )
        if self._config.two_phase and url.get_backend_name() == "sqlite":
            raise ConfigurationError(
                f"bind {key!r}: two_phase=True needs PostgreSQL or MariaDB/MySQL; SQLite has no two-phase "
                "commit. Set two_phase=False or move the bind to a server database"
            )
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            package = _PACKAGES.get(dialect.driver, dialect.driver)
            extra = _EXTRAS.get(dialect.driver)
            hint = f"pip install '{package}'" + (f" or 'litestar-alchemy[{extra}]'" if extra else "")
            raise DriverNotInstalledError(
                f"bind {key!r} uses driver {dialect.driver!r}, which is not installed ({exc.name or exc}); {hint}"
            ) from None
        options: dict[str, Any] = dict(bind.engine_options)
        if self._config.is_async:
            return create_async_engine(url, **options)
        return create_engine(url, **options)

    def _detach(self) -> dict[str, AnyEngine]:
        engines, self._engines, self._sync = self._engines, {}, {}
        self.state = "closed"
        return engines

    async def dispose(self) -> None:
        """Dispose every engine, even when one of them fails to; then the registry is ``closed``."""
        for key, engine in self._detach().items():
            try:
                if isinstance(engine, AsyncEngine):
                    await engine.dispose()
                else:
                    engine.dispose()
            except Exception:
                logger.exception("disposing the engine of bind %r failed", key)

    def dispose_sync(self) -> None:
        """:meth:`dispose` for sync configs, callable without an event loop (sync scripts)."""
        if self._config.is_async:
            raise LifecycleError("this config is async; dispose its engines with `await registry.dispose()`")
        for key, engine in self._detach().items():
            try:
                engine.sync_engine.dispose() if isinstance(engine, AsyncEngine) else engine.dispose()
            except Exception:
                logger.exception("disposing the engine of bind %r failed", key)

    # -- lookups -------------------------------------------------------------------------------------

    def _lookup_error(self, key: str) -> Exception:
        if self.state == "unopened":
            return LifecycleError(
                "the engines are not started yet; use sessions inside the app's lifespan, or wrap a "
                "script in `async with plugin.lifespan():`"
            )
        if self.state == "closed":
            return LifecycleError("the engines were disposed at shutdown; start the app (or plugin.lifespan()) again")
        return unknown_binds([key], self._engines)

    def engine(self, key: str) -> AnyEngine:
        """The engine of bind ``key`` (an ``AsyncEngine`` in async configs)."""
        try:
            return self._engines[key]
        except KeyError:
            raise self._lookup_error(key) from None

    def sync_engine(self, key: str) -> Engine:
        """The sync ``Engine`` behind bind ``key`` (what a ``Session`` binds to)."""
        try:
            return self._sync[key]
        except KeyError:
            raise self._lookup_error(key) from None

    @property
    def engines(self) -> Mapping[str, AnyEngine]:
        """Every started engine by bind key, in bind order (empty unless ``open``)."""
        return dict(self._engines)

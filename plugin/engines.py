"""The engine registry: one engine per bind, created at startup, every one disposed at shutdown.

The registry has an explicit state (``unopened`` → ``open`` → ``closed``, and ``closed`` → ``open`` again
for apps started twice, as tests do); using it in the wrong state raises a
:class:`~plugin.exceptions.LifecycleError` that says which state it is in and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any, Literal, Union

import anyio
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from plugin.exceptions import (
    ConfigurationError,
    DriverMismatchError,
    DriverNotInstalledError,
    LifecycleError,
    mask_url,
    note_failing_engine,
    unknown_binds,
)
from plugin.twophase import InDoubt

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.engine import Dialect, Engine

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


def _dialect_class(who: str, url: URL) -> type[Dialect]:
    try:
        return url.get_dialect()
    except NoSuchModuleError:
        raise ConfigurationError(
            f"{who}: SQLAlchemy has no driver {url.drivername!r} ({mask_url(url)}); "
            "check the URL's dialect+driver part, e.g. postgresql+asyncpg or sqlite+aiosqlite"
        ) from None


def _replica_binds(bind: BindConfig) -> list[BindConfig]:
    """Each replica of ``bind`` as a bind of its own: its URL with the bind's engine options, or its engine."""
    from plugin.config import BindConfig

    return [
        BindConfig(url=replica, engine_options=bind.engine_options)
        if isinstance(replica, URL)
        else BindConfig(engine=replica)
        for replica in bind.replica_targets
    ]


def _redacted(exc: BaseException, secrets: list[str]) -> str:
    text = " ".join(str(exc).split())
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class EngineRegistry:
    """Owns the engines of one config. Created unopened; :meth:`start` makes the engines."""

    def __init__(self, config: _SQLAlchemyConfig) -> None:
        self._config = config
        self._engines: dict[str, AnyEngine] = {}
        self._sync: dict[str, Engine] = {}
        self._keys: dict[Engine, str] = {}
        self._replicas: dict[str, tuple[AnyEngine, ...]] = {}
        self._replica_keys: dict[Engine, str] = {}
        self.generation = 0
        """Counts starts: state kept about the engines of an earlier start (replica health) is stale."""
        self.in_doubt = InDoubt()
        """Prepared transactions decided but not yet finished (their server was unreachable)."""
        self._retrying: asyncio.Task[None] | None = None
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
        replicas: dict[str, tuple[AnyEngine, ...]] = {}
        try:
            for key, bind in self._config.bind_configs.items():
                engines[key] = self._create(key, bind)
                if bind.replicas:
                    replicas[key] = tuple(
                        self._create(key, replica, number) for number, replica in enumerate(_replica_binds(bind), 1)
                    )
        except BaseException:
            for made in [*engines.values(), *(e for group in replicas.values() for e in group)]:
                (made.sync_engine if isinstance(made, AsyncEngine) else made).dispose()
            raise
        self._engines = engines
        self._replicas = replicas
        self._replica_keys = {
            (e.sync_engine if isinstance(e, AsyncEngine) else e): key for key, group in replicas.items() for e in group
        }
        self.generation += 1
        self._sync = {k: e.sync_engine if isinstance(e, AsyncEngine) else e for k, e in engines.items()}
        self._keys = {}
        for key, sync in self._sync.items():
            self._keys.setdefault(sync, key)
            event.listen(sync, "handle_error", note_failing_engine)  # once per engine, however often asked
        self.state = "open"

    def _create(self, key: str, bind: BindConfig, replica: int | None = None) -> AnyEngine:
        url = bind.resolved_url
        # Errors name the replica: its bind's own URL is fine, and "bind 'x'" alone sent people there.
        who = f"bind {key!r}" if replica is None else f"bind {key!r}, replica {replica}"
        if self._config.two_phase and url.get_backend_name() == "sqlite":  # a given engine too
            raise ConfigurationError(
                f"{who}: two_phase=True needs PostgreSQL or MariaDB/MySQL; SQLite has no two-phase "
                "commit. Set two_phase=False or move the bind to a server database"
            )
        if bind.engine is not None:
            return bind.engine
        dialect = _dialect_class(who, url)
        is_async = self._config.is_async
        if bool(getattr(dialect, "is_async", False)) != is_async:
            wanted = (
                "an async driver such as sqlite+aiosqlite, postgresql+asyncpg or mysql+asyncmy"
                if is_async
                else "a sync driver such as sqlite, postgresql+psycopg or mysql+pymysql"
            )
            raise DriverMismatchError(
                f"{who}: driver {dialect.driver!r} is {'sync' if is_async else 'async'} but "
                f"{type(self._config).__name__} needs {wanted} ({mask_url(url)}); change the URL's driver "
                f"or use {'SQLAlchemySyncConfig' if is_async else 'SQLAlchemyAsyncConfig'}"
            )
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            package = _PACKAGES.get(dialect.driver, dialect.driver)
            extra = _EXTRAS.get(dialect.driver)
            hint = f"pip install '{package}'" + (f" or 'litestar-alchemy[{extra}]'" if extra else "")
            raise DriverNotInstalledError(
                f"{who} uses driver {dialect.driver!r}, which is not installed ({exc.name or exc}); {hint}"
            ) from None
        options: dict[str, Any] = dict(bind.engine_options)
        try:
            if self._config.is_async:
                return create_async_engine(url, **options)
            return create_engine(url, **options)
        except (TypeError, ValueError, ArgumentError) as exc:
            raise ConfigurationError(
                f"{who}: create_engine() rejected engine_options ({_redacted(exc, bind.secrets())}); "
                f"fix or remove the option (given: {', '.join(sorted(options)) or 'none'})"
            ) from None

    def _detach(self) -> dict[str, AnyEngine]:
        """Every engine, replicas included (as ``"<bind> replica <n>"``), taken out of the registry."""
        engines = dict(self._engines)
        for key, replicas in self._replicas.items():
            engines.update({f"{key} replica {number}": engine for number, engine in enumerate(replicas, 1)})
        self._engines, self._sync, self._keys, self._replicas, self._replica_keys = {}, {}, {}, {}, {}
        self.state = "closed"
        return engines

    def _abandoned(self, key: str) -> None:
        logger.warning(
            "bind %r: its connections did not close within %g s at shutdown (is the server answering?); "
            "they were abandoned",
            key,
            self._config.shutdown_timeout,
        )

    def keep_finishing_in_doubt(self, every: float = 2.0) -> None:
        """While the engines run, try every ``every`` seconds to finish the prepared transactions an
        earlier commit left in doubt, so none outlives its server's return even when no request comes
        (two-phase configs; stopped by :meth:`dispose`)."""

        async def retry_forever() -> None:
            while True:
                await asyncio.sleep(every)
                if not self.in_doubt:
                    continue
                try:
                    if self._config.is_async:
                        await greenlet_spawn(self.in_doubt.retry)
                    else:
                        await anyio.to_thread.run_sync(self.in_doubt.retry, abandon_on_cancel=True)
                except Exception:
                    logger.exception("finishing prepared transactions left in doubt failed")

        self._retrying = asyncio.get_running_loop().create_task(retry_forever())

    async def dispose(self) -> None:
        """Dispose every engine at once, each within ``shutdown_timeout``; then the registry is ``closed``.

        A connection that does not close in time (a server that stopped answering) is abandoned with a
        WARNING, so that a stalled database cannot keep the process from exiting.
        """

        async def dispose_one(key: str, engine: AnyEngine) -> None:
            try:
                with anyio.fail_after(self._config.shutdown_timeout):
                    if isinstance(engine, AsyncEngine):
                        await engine.dispose()
                    else:
                        await anyio.to_thread.run_sync(engine.dispose, abandon_on_cancel=True)
            except TimeoutError:
                self._abandoned(key)
            except Exception:
                logger.exception("disposing the engine of bind %r failed", key)

        if (retrying := self._retrying) is not None:
            self._retrying = None
            retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrying
        if self.in_doubt:  # a last try for prepared transactions an earlier commit could not finish
            with anyio.move_on_after(self._config.shutdown_timeout):
                if self._config.is_async:
                    await greenlet_spawn(self.in_doubt.retry)
                else:
                    await anyio.to_thread.run_sync(self.in_doubt.retry, abandon_on_cancel=True)
        await asyncio.gather(*(dispose_one(key, engine) for key, engine in self._detach().items()))

    def dispose_sync(self) -> None:
        """:meth:`dispose` for sync configs, callable without an event loop (sync scripts)."""
        if self._config.is_async:
            raise LifecycleError("this config is async; dispose its engines with `await registry.dispose()`")
        if self.in_doubt:
            self.in_doubt.retry()
        for key, engine in self._detach().items():
            sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
            outcome: list[BaseException | None] = []

            def dispose(sync: Engine = sync, outcome: list[BaseException | None] = outcome) -> None:
                try:
                    sync.dispose()
                except BaseException as exc:
                    outcome.append(exc)
                else:
                    outcome.append(None)

            worker = threading.Thread(target=dispose, name=f"dispose-{key}", daemon=True)
            worker.start()
            worker.join(self._config.shutdown_timeout)
            if not outcome:
                self._abandoned(key)
            elif outcome[0] is not None:
                logger.error("disposing the engine of bind %r failed", key, exc_info=outcome[0])

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

    def bind_of(self, engine: Engine) -> str | None:
        """The bind key of a started (sync) engine, the reverse of :meth:`sync_engine`; ``None`` for one of
        the binds' read replicas. Raises :class:`LifecycleError` for any other engine."""
        key = self._keys.get(engine)
        if key is None and engine not in self._replica_keys:  # every replica read asks: nothing raised for it
            raise LifecycleError(f"engine {mask_url(engine.url)} is not one of this plugin's started engines")
        return key

    def sync_engine(self, key: str) -> Engine:
        """The sync ``Engine`` behind bind ``key`` (what a ``Session`` binds to)."""
        try:
            return self._sync[key]
        except KeyError:
            raise self._lookup_error(key) from None

    def replicas(self, key: str) -> tuple[AnyEngine, ...]:
        """The read replicas' engines of bind ``key``, in config order (empty when it has none)."""
        if key not in self._engines:
            raise self._lookup_error(key)
        return self._replicas.get(key, ())

    def every_sync_engine(self) -> list[tuple[str, Engine]]:
        """Every started sync engine with its bind key, replicas included: each bind's, then its replicas'."""
        found: list[tuple[str, Engine]] = []
        for key, sync in self._sync.items():
            found.append((key, sync))
            found += [(key, e.sync_engine if isinstance(e, AsyncEngine) else e) for e in self._replicas.get(key, ())]
        return found

    @property
    def engines(self) -> Mapping[str, AnyEngine]:
        """Every started engine by bind key, in bind order (empty unless ``open``)."""
        return dict(self._engines)

"""``SQLAlchemyPlugin``: the thin adapter between a config and a Litestar app."""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from litestar.plugins import CLIPlugin, InitPlugin

from plugin.binds import BindRouter
from plugin.config import SQLAlchemyAsyncConfig, SQLAlchemySyncConfig, _SQLAlchemyConfig
from plugin.engines import EngineRegistry
from plugin.exceptions import ConfigurationError
from plugin.sandbox import Sandbox
from plugin.sessions import AsyncRoutingSession, RoutingSession, SessionFactory
from plugin.transactions import close_all, unit_of_work, unit_of_work_sync
from plugin.wiring import lifespan, register

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from contextlib import AbstractAsyncContextManager, AbstractContextManager

    from click import Group
    from litestar import Router
    from litestar.config.app import AppConfig
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from plugin.replicas import Replicas
    from plugin.wiring import _Lifespan

__all__ = ("SQLAlchemyPlugin",)

ConfigT = TypeVar("ConfigT", bound=_SQLAlchemyConfig)


class SQLAlchemyPlugin(InitPlugin, CLIPlugin, Generic[ConfigT]):
    """Engines per bind, a bind-routed session per request, and automatic commit/rollback.

    Example::

        plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite:///app.db"}))
        app = Litestar(route_handlers=[...], plugins=[plugin])

        # outside a request (a worker, a script):
        async with plugin.lifespan(), plugin.transaction() as session:
            session.add(User(name="ada"))  # committed at the end of the block
    """

    def __init__(self, config: ConfigT) -> None:
        self.config: ConfigT = config
        self.router = BindRouter(tuple(config.bind_configs), config.default_bind, config.base)
        """Which bind each model, table and statement belongs to."""
        self.engines = EngineRegistry(config)
        """The engines, by bind key; started by the app's lifespan (or :meth:`lifespan`)."""
        self.replicas: Replicas | None = None
        """The read replicas of binds that have them (``None``: no bind has replicas)."""
        self.sessions: SessionFactory = SessionFactory(config, self.engines, self.router)
        """Makes routed sessions (``sessions()``) and per-bind sessions (``sessions("logs")``)."""
        if config.has_replicas:  # decided once: without replicas, sessions and requests never route reads
            from plugin.replica_sessions import ReplicaSessionFactory
            from plugin.replicas import Replicas

            self.replicas = Replicas(config, self.engines)
            self.sessions = ReplicaSessionFactory(config, self.engines, self.router, self.replicas)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Register providers, the transaction middleware, hooks and the lifespan on the app."""
        return register(self, app_config)

    def on_cli_init(self, cli: Group) -> None:
        """Keep ``litestar db`` ours when another plugin (advanced-alchemy) claims ``db`` as an alias."""
        from alchemy_cli.coexistence import keep_db

        keep_db(cli)

    def lifespan(self) -> _Lifespan:
        """Start the engines (and create tables if configured); dispose every engine at exit.

        The app's lifespan uses it; scripts use ``async with plugin.lifespan():`` (``with`` for sync
        configs). Inside a running app the engines are already started: do not enter it again.
        """
        return lifespan(self)

    def health_route(
        self,
        path: str = "/health/db",
        *,
        live_path: str | None = None,
        timeout: float = 2.0,
        cache_seconds: float = 2.0,
        schema: bool = False,
        migrations: bool = False,
        include_in_schema: bool = False,
    ) -> Router:
        """Opt-in health routes for ``route_handlers=[...]``: readiness at ``path`` runs ``db check``'s
        checks on every bind (200 or 503), liveness at ``<path>/live`` touches no database.

        See :func:`plugin.health.health_router` for the options.
        """
        from plugin.health import health_router

        return health_router(
            self,
            path,
            live_path=live_path,
            timeout=timeout,
            cache_seconds=cache_seconds,
            schema=schema,
            migrations=migrations,
            include_in_schema=include_in_schema,
        )

    def primary(self) -> AbstractContextManager[None]:
        """Inside ``with plugin.primary():`` every statement goes to the primary, reads included.

        For binds with replicas; a no-op for the others. ``bind_arguments={"primary": True}`` does the same
        for one statement. See :mod:`plugin.replicas`.
        """
        from plugin.replicas import primary

        return primary()

    def sandbox(self) -> Sandbox:
        """Everything done inside is rolled back on every bind at the end, commits included.

        ``async with plugin.sandbox():`` (``with`` for sync configs), inside the engines' lifespan. Every
        session made meanwhile (``db_session`` in requests, :meth:`session`, :meth:`transaction`) joins one
        held connection per bind with savepoints; statements that would escape are refused. See
        :mod:`plugin.sandbox`.
        """
        return Sandbox(self)

    @overload
    def session(
        self: SQLAlchemyPlugin[SQLAlchemyAsyncConfig], bind: str | None = None, *, replica: bool = False
    ) -> AbstractAsyncContextManager[AsyncSession]: ...
    @overload
    def session(
        self: SQLAlchemyPlugin[SQLAlchemySyncConfig], bind: str | None = None, *, replica: bool = False
    ) -> AbstractContextManager[Session]: ...
    def session(self, bind: str | None = None, *, replica: bool = False) -> Any:
        """A routed session (or, with ``bind``, one pinned to that bind), closed at exit. You commit.

        It reads from the primary; with ``replica=True`` it reads from a replica until it writes, as a GET
        request does.
        """
        session = self._new_session(bind, replica)
        return _closing(session) if isinstance(session, AsyncRoutingSession) else _closing_sync(session)

    @overload
    def transaction(
        self: SQLAlchemyPlugin[SQLAlchemyAsyncConfig],
        bind: str | None = None,
        *,
        dry_run: bool = False,
        replica: bool = False,
    ) -> AbstractAsyncContextManager[AsyncSession]: ...
    @overload
    def transaction(
        self: SQLAlchemyPlugin[SQLAlchemySyncConfig],
        bind: str | None = None,
        *,
        dry_run: bool = False,
        replica: bool = False,
    ) -> AbstractContextManager[Session]: ...
    def transaction(self, bind: str | None = None, *, dry_run: bool = False, replica: bool = False) -> Any:
        """A session whose block is one unit of work under the config's transaction policy.

        Success commits (unless the policy is ``manual`` or ``dry_run``), an exception rolls back, and a
        failed commit raises :class:`~plugin.exceptions.CommitError`, exactly as for a request. It reads from
        the primary; with ``replica=True``, from a replica until it writes.
        """
        session = self._new_session(bind, replica)
        policy = self.config.transaction
        if isinstance(session, AsyncRoutingSession):
            return unit_of_work(session, policy, dry_run=dry_run)
        return unit_of_work_sync(session, policy, dry_run=dry_run)

    def _new_session(self, bind: str | None, replica: bool) -> AsyncRoutingSession | RoutingSession:
        if not replica:
            return self.sessions(bind)
        if self.replicas is None:
            raise ConfigurationError(
                "replica=True, but no bind has replicas; configure BindConfig(replicas=[...]) or drop replica=True"
            )
        return self.sessions(bind, replica=True)  # type: ignore[call-arg]  # a ReplicaSessionFactory


@asynccontextmanager
async def _closing(session: AsyncRoutingSession) -> AsyncIterator[AsyncRoutingSession]:
    try:
        yield session
    finally:
        await close_all([session])


@contextmanager
def _closing_sync(session: RoutingSession) -> Iterator[RoutingSession]:
    try:
        yield session
    finally:
        session.close()

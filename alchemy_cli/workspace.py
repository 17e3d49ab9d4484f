"""The sessions and names behind ``db shell`` and ``db run``, in one of three modes.

- ``normal``: sessions exactly like a request's (same class, same routing, same engines); nothing is
  committed unless you commit (``db run`` settles them with the transaction policy).
- ``sandbox``: the plugin's own sandbox (:mod:`plugin.sandbox`, entered by :func:`open_workspace`): one
  held connection per bind in an outer transaction rolled back at the end, sessions joined with
  savepoints, statements that would escape refused. The engines (and ``plugin``, ``app``) are not
  preloaded, and the sandbox refuses to run anything on their other connections.
- ``read-only``: every connection the engines open is made read-only by the database itself (a pool
  ``connect`` listener, in place before the first connection), so any write, through sessions or
  engines, fails with the server's own error.

The sessions are the plugin's own (``plugin.sessions``), so they join an active sandbox as any session
the plugin makes does.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, event, func, insert, select, text, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from alchemy_cli.ledger import Ledger
from plugin import ConfigurationError, LifecycleError
from plugin.sessions import is_started
from plugin.transactions import close_all

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from alchemy_cli.destructive import Confirmation
    from alchemy_cli.loader import Target
    from plugin import SQLAlchemyPlugin
    from plugin.sandbox import Sandbox

__all__ = ("Mode", "Workspace", "open_workspace")

Mode = Literal["normal", "sandbox", "read-only"]

_READ_ONLY_SQL = {
    "sqlite": "PRAGMA query_only = ON",
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}
SQL_NAMES = {"select": select, "insert": insert, "update": update, "delete": delete, "text": text, "func": func}


class Workspace:
    """Sessions on every bind, the names a shell or script sees, and how they end."""

    confirmation: Confirmation | None = None
    """Set by the commands: how ``sql()`` lets destructive statements through."""

    def __init__(
        self,
        target: Target,
        *,
        mode: Mode = "normal",
        bind: str | None = None,
        echo: bool = False,
        replica: bool = False,
    ) -> None:
        plugin = target.plugin
        if bind is not None:
            plugin.router.require(bind)
        self.target = target
        self.mode = mode
        self.main_bind = bind
        self.replica = replica
        """Reads go to each bind's replica (``--replica``); every engine is read-only."""
        self.is_async = plugin.config.is_async
        self.sandbox: Sandbox | None = plugin.sessions.sandbox
        if (mode == "sandbox") != (self.sandbox is not None):
            raise LifecycleError("a sandbox workspace needs an active sandbox, and only it; use open_workspace()")
        if replica and mode != "read-only":
            raise LifecycleError("a replica workspace is read-only by construction; open it with mode='read-only'")
        make: Callable[[str | None], Any] = _replica_sessions(plugin, bind) if replica else plugin.sessions
        self.sessions: dict[str | None, AsyncSession | Session] = {
            key: make(key) for key in (None, *plugin.router.keys)
        }
        self.ledger = Ledger()
        """What became of the rows written on each bind (what ``db run`` reports)."""
        self._listeners: list[tuple[Engine, str, Callable[..., None]]] = []
        for key, engine in plugin.engines.every_sync_engine():
            is_bind = engine is plugin.engines.sync_engine(key)
            for name, listener in self.ledger.listeners(key) if is_bind else ():
                self._listen(engine, name, listener)
            if mode == "read-only":  # replicas too: a replica that is not a standby refuses writes all the same
                self._listen(engine, "connect", _read_only_listener(key, engine.dialect.name))
            if echo:
                self._listen(engine, "before_cursor_execute", _echo)

    def _listen(self, engine: Engine, name: str, listener: Callable[..., None]) -> None:
        event.listen(engine, name, listener)
        self._listeners.append((engine, name, listener))

    @property
    def session(self) -> AsyncSession | Session:
        """The routed session, or the ``--bind`` one."""
        return self.sessions[self.main_bind]

    def namespace(self) -> tuple[dict[str, Any], list[str]]:
        """The preloaded names, and a line for every model that had to be renamed."""
        plugin = self.target.plugin
        names: dict[str, Any] = {**SQL_NAMES, "sql": self.sql, "session": self.session}
        if self.mode != "sandbox":  # writes through these would bypass the sandbox's savepoints
            names.update({"app": self.target.app, "plugin": plugin, "engines": dict(plugin.engines.engines)})
            names.update({f"{key}_engine": plugin.engines.engine(key) for key in plugin.router.keys})
        for key in plugin.router.keys:
            names[f"{key}_session"] = self.sessions[key]
        renamed: list[str] = []
        for mapper in plugin.router.mappers():
            model = mapper.class_
            name = model.__name__
            if name in names:  # the shell's own names win; a second model of that name is qualified
                alias = f"{model.__module__.replace('.', '_')}_{name}"
                renamed.append(f"{model.__module__}.{name} is {alias} ({name!r} was taken)")
                name = alias
            names[name] = model
        return names, renamed

    async def sql(self, statement: str, bind: str | None = None, **params: Any) -> None:
        """Run raw SQL on a bind (default: the shell's session) and print rows as a table."""
        from alchemy_cli import render

        if self.confirmation is not None:  # destructive SQL needs a yes (alchemy_cli.destructive)
            self.confirmation.check(statement, bind or self.main_bind or self.target.plugin.config.default_bind)
        session = self.sessions[bind] if bind is not None else self.session
        if isinstance(session, AsyncSession):
            result = await session.execute(text(statement), params)
        else:
            result = session.execute(text(statement), params)
        if isinstance(result, CursorResult) and not result.returns_rows:
            render.line(f"{result.rowcount} row{'s' if result.rowcount != 1 else ''} affected")
        else:
            render.rows(list(result.keys()), [tuple(row) for row in result])

    def uncommitted(self) -> list[str]:
        """What closing will throw away: written rows per bind, and sessions with unflushed changes."""
        lost = [f"{n} row{'s' if n != 1 else ''} on bind {key!r}" for key, n in self.ledger.pending().items()]
        return lost + [f"unflushed changes in {name}" for name in self.unflushed()]

    def unflushed(self) -> list[str]:
        """The names of the sessions holding changes never sent to the database."""
        return [
            f"{key}_session" if key else "session"
            for key, session in self.sessions.items()
            if is_started(session) and (session.new or session.dirty or session.deleted)
        ]

    async def close(self) -> None:
        """Close every session, rolling back what is open (in a sandbox: to the sessions' savepoints)."""
        try:
            await close_all(list(self.sessions.values()))
        finally:
            for listener in self._listeners:
                event.remove(*listener)


@asynccontextmanager
async def open_workspace(
    target: Target, *, mode: Mode = "normal", bind: str | None = None, echo: bool = False, replica: bool = False
) -> AsyncIterator[Workspace]:
    """A :class:`Workspace`, inside the plugin's sandbox in ``sandbox`` mode; closed (and the sandbox rolled
    back, raising :class:`~plugin.exceptions.SandboxError` if a bind could not be) at exit."""
    async with AsyncExitStack() as stack:
        if mode == "sandbox":
            await stack.enter_async_context(target.plugin.sandbox())
        workspace = Workspace(target, mode=mode, bind=bind, echo=echo, replica=replica)
        stack.push_async_callback(workspace.close)
        yield workspace


def _replica_sessions(plugin: SQLAlchemyPlugin[Any], bind: str | None) -> Callable[[str | None], Any]:
    """Sessions for ``--replica``: every statement of a bind that has replicas goes to one of them (one
    replica per bind for the whole workspace); binds without replicas use their primary, read-only too."""
    from plugin.replica_sessions import ReplicaSessionFactory

    factory = plugin.sessions
    if not isinstance(factory, ReplicaSessionFactory):
        raise ConfigurationError("--replica: no bind has read replicas; configure BindConfig(replicas=[...])")
    if bind is not None and not plugin.engines.replicas(bind):
        raise ConfigurationError(f"--replica: bind {bind!r} has no read replicas; pick a bind that has some")
    return partial(factory, routing=factory.replicas.routing(read=True, replica_only=True))


def _read_only_listener(key: str, dialect: str) -> Callable[..., None]:
    """A pool ``connect`` listener that has the database refuse writes on every new connection."""
    statement = _READ_ONLY_SQL.get(dialect)
    if statement is None:
        raise ConfigurationError(f"bind {key!r}: --read-only is not supported for {dialect}; use --sandbox instead")

    def make_read_only(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()  # PostgreSQL undoes a SET made in a transaction that is rolled back

    return make_read_only


def _echo(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
    from alchemy_cli import render

    render.echo(statement, parameters)

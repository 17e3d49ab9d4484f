"""The sessions and names behind ``db shell`` and ``db run``, in one of three modes.

- ``normal``: sessions exactly like a request's (same class, same routing, same engines); nothing is
  committed unless you commit (``db run`` settles them with the transaction policy).
- ``sandbox``: each bind gets one connection, held in an outer transaction that is rolled back when the
  workspace closes; sessions join it with savepoints, so ``commit()`` releases a savepoint and nothing
  done through them survives the shell. The engines (and ``plugin``, ``app``) are not preloaded: a write
  through them would not be in the sandbox.
- ``read-only``: every connection the engines open is made read-only by the database itself (a pool
  ``connect`` listener, in place before the first connection), so any write, through sessions or
  engines, fails with the server's own error.

The sessions are the plugin's :class:`~plugin.sessions.RoutingSession` classes with the plugin's own
options; only where connections come from (``targets``) changes between modes.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, event, func, insert, select, text, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import greenlet_spawn

from plugin import ConfigurationError
from plugin.sessions import AsyncRoutingSession, RoutingSession, is_started
from plugin.transactions import close_all

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session

    from alchemy_cli.destructive import Confirmation
    from alchemy_cli.loader import Target

__all__ = ("Mode", "Workspace")

Mode = Literal["normal", "sandbox", "read-only"]

_READ_ONLY_SQL = {
    "sqlite": "PRAGMA query_only = ON",
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}
SQL_NAMES = {"select": select, "insert": insert, "update": update, "delete": delete, "text": text, "func": func}


class PinnedConnections:
    """One connection per bind, opened on first use and held until :meth:`release` (the sandbox).

    Called by the sessions' ``get_bind`` (inside SQLAlchemy's greenlet for async engines, where the sync
    API works), so opening a connection here needs no ``await``.
    """

    def __init__(self, engine_for: Callable[[str], Engine]) -> None:
        self._engine_for = engine_for
        self._connections: dict[str, Connection] = {}

    def __call__(self, key: str) -> Connection:
        connection = self._connections.get(key)
        if connection is None:
            connection = self._engine_for(key).connect()
            self._connections[key] = connection
            connection.begin()
            if connection.dialect.name == "sqlite":
                # pysqlite/aiosqlite only BEGIN before DML: without this the first SAVEPOINT would itself
                # become the transaction, and releasing it would commit.
                connection.exec_driver_sql("BEGIN")
        return connection

    def release(self) -> None:
        """Roll back (sandbox) and close every held connection."""
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            try:
                connection.rollback()
            finally:
                connection.close()


class Workspace:
    """Sessions on every bind, the names a shell or script sees, and how they end."""

    confirmation: Confirmation | None = None
    """Set by the commands: how ``sql()`` lets destructive statements through."""

    def __init__(self, target: Target, *, mode: Mode = "normal", bind: str | None = None, echo: bool = False) -> None:
        plugin = target.plugin
        if bind is not None:
            plugin.router.require(bind)
        self.target = target
        self.mode = mode
        self.main_bind = bind
        self.is_async = plugin.config.is_async
        self.pinned = PinnedConnections(plugin.engines.sync_engine) if mode == "sandbox" else None
        self.sessions: dict[str | None, AsyncSession | Session] = {
            key: self._new_session(key) for key in (None, *plugin.router.keys)
        }
        self.rows_affected: Counter[str] = Counter()
        """Rows inserted, updated or deleted on each bind (what ``db run`` reports)."""
        self._uncommitted: Counter[str] = Counter()
        self._listeners: list[tuple[Engine, str, Callable[..., None]]] = []
        for key in plugin.router.keys:
            engine = plugin.engines.sync_engine(key)
            self._listen(engine, "after_cursor_execute", self._counter(key))
            for name in ("commit", "rollback"):
                self._listen(engine, name, self._forget(key))
            if mode == "read-only":
                self._listen(engine, "connect", _read_only_listener(key, engine.dialect.name))
            if echo:
                self._listen(engine, "before_cursor_execute", _echo)

    def _new_session(self, bind: str | None) -> AsyncSession | Session:
        options = self.target.plugin.sessions.options(bind)
        if self.pinned is not None:
            options["targets"] = self.pinned
            options["join_transaction_mode"] = "create_savepoint"
        return AsyncRoutingSession(**options) if self.is_async else RoutingSession(**options)

    def _listen(self, engine: Engine, name: str, listener: Callable[..., None]) -> None:
        event.listen(engine, name, listener)
        self._listeners.append((engine, name, listener))

    def _counter(self, key: str) -> Callable[..., None]:
        def count(_conn: Any, cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
            # ORM and Core DML say what they are; text() DML does not, but it returns no rows and changes some.
            dml = context is not None and (context.isinsert or context.isupdate or context.isdelete)
            if (dml or cursor.description is None) and cursor.rowcount > 0:
                self.rows_affected[key] += cursor.rowcount
                self._uncommitted[key] += cursor.rowcount

        return count

    def _forget(self, key: str) -> Callable[..., None]:
        def forget(_conn: Any) -> None:
            self._uncommitted.pop(key, None)

        return forget

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
        lost = [f"{n} row{'s' if n != 1 else ''} on bind {key!r}" for key, n in self._uncommitted.items() if n]
        lost += [
            f"unflushed changes in {key + '_session' if key else 'session'}"
            for key, session in self.sessions.items()
            if is_started(session) and (session.new or session.dirty or session.deleted)
        ]
        return lost

    async def close(self) -> None:
        """Close every session (rolling back what is open) and release the held connections."""
        for listener in self._listeners:
            event.remove(*listener)
        await close_all(list(self.sessions.values()))
        if self.pinned is not None:
            if self.is_async:
                await greenlet_spawn(self.pinned.release)
            else:
                self.pinned.release()


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

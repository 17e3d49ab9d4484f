"""The sandbox: everything done on every bind is rolled back at the end, commits included.

Entering a sandbox opens one connection per bind and begins an outer transaction on each. While it is
active, every session the plugin makes (the routed ``db_session``, ``<bind>_db_session``,
``plugin.session()``, ``plugin.transaction()``, the sessions of requests served meanwhile) joins those
connections with SQLAlchemy's ``join_transaction_mode="create_savepoint"``: ``commit()`` releases a
savepoint, ``rollback()`` rolls back to one, and the outer transactions are rolled back when the sandbox
ends. Three users: ``litestar db shell --sandbox``, ``litestar db run --dry-run`` and the pytest
fixtures of :mod:`plugin.testing`.

It cannot write. A ``before_cursor_execute`` listener on each bind's engine checks every statement before
it reaches the driver:

- on the held connections, statements that would end or escape the outer transaction are refused with
  :class:`~plugin.exceptions.StatementRefusedError` (the rule is :func:`plugin.statements.sandbox_refusal`:
  transaction control in SQL everywhere, and on MariaDB/MySQL every statement that commits implicitly);
  so are ``commit()`` and ``rollback()`` called on a held ``Connection`` itself;
- any other connection of the engines (``db_engine``, an engine imported from the app) runs nothing: its
  writes would not be in the sandbox.

Limits: SQL run on a raw DBAPI connection (``connection.connection.dbapi_connection.cursor()``) bypasses
SQLAlchemy and this guard; effects outside the database's transaction (sequences on PostgreSQL,
``dblink``, ``COPY ... TO PROGRAM``, files) are not undone. The held connection of a bind is one
connection: requests served inside a sandbox must not use a bind at the same time.

Example::

    async with plugin.lifespan(), plugin.sandbox():
        async with plugin.transaction() as session:
            session.add(User(name="ada"))  # "committed": a savepoint is released
    # nothing was written
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import event
from sqlalchemy.util import greenlet_spawn

from plugin.exceptions import LifecycleError, SandboxError, StatementRefusedError, describe_error
from plugin.statements import sandbox_refusal, shorten, split

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Engine

    from plugin.plugin import SQLAlchemyPlugin

__all__ = ("Sandbox",)

_ENDING = ("commit", "rollback", "close")
_ENDED_BY_SANDBOX = "the sandbox's transaction is ended only by leaving the sandbox"
_OUTSIDE = (
    "this connection of the engine is outside the sandbox, so its writes would be real; use the sessions "
    "(db_session, plugin.session()), which join the sandbox"
)


class Sandbox:
    """One held connection per bind in an outer transaction that is always rolled back.

    Made by :meth:`SQLAlchemyPlugin.sandbox() <plugin.plugin.SQLAlchemyPlugin.sandbox>`; enter it with
    ``async with`` (any config) or ``with`` (sync configs), inside the engines' lifespan. One sandbox at a
    time per plugin. Leaving it raises :class:`~plugin.exceptions.SandboxError` if any bind could not be
    rolled back, naming the binds.
    """

    def __init__(self, plugin: SQLAlchemyPlugin[Any]) -> None:
        self._plugin = plugin
        self._connections: dict[str, Connection] = {}
        self._held: dict[Connection, str] = {}
        self._listeners: list[tuple[Engine, str, Callable[..., Any]]] = []
        self._releasing = False
        self.rolled_back = False
        """True once every outer transaction was rolled back (what may be reported as "rolled back")."""
        self.lost: list[str] = []
        """Binds whose connection was lost inside the sandbox: the server rolled their transaction back."""

    # -- what sessions see ---------------------------------------------------------------------------

    def connection(self, key: str) -> Connection:
        """The held connection of bind ``key`` (what joined sessions' ``get_bind`` returns)."""
        try:
            return self._connections[key]
        except KeyError:
            raise SandboxError(f"bind {key!r} has no connection in this sandbox; is the sandbox still open?") from None

    @property
    def binds(self) -> list[str]:
        """The binds whose connections the sandbox holds, in bind order."""
        return list(self._connections)

    # -- opening and closing -------------------------------------------------------------------------

    def _open(self) -> None:
        plugin = self._plugin
        if plugin.sessions.sandbox is not None:
            raise LifecycleError("a sandbox is already active on this plugin; leave it before entering another")
        engines = {key: plugin.engines.sync_engine(key) for key in plugin.router.keys}
        try:
            for key, engine in engines.items():
                self._connections[key] = self._hold(key, engine)
        except BaseException:
            self._release()
            raise
        for key, engine in engines.items():
            self._listen(engine, "before_cursor_execute", self._guard(key))
            for name in ("commit", "rollback", "begin_twophase"):
                self._listen(engine, name, self._guard_transaction(key, name))
        plugin.sessions.sandbox = self

    def _hold(self, key: str, engine: Engine) -> Connection:
        try:
            connection = engine.connect()
        except Exception as exc:
            raise SandboxError(f"bind {key!r}: the sandbox could not connect: {describe_error(exc)}") from exc
        self._held[connection] = key
        # The Connection API would end the outer transaction: refuse it before SQLAlchemy changes any state
        # (the engine-event guard below only backs this up, as raising there leaves the connection unusable).
        for name in _ENDING:
            setattr(connection, name, self._refuse_ending(key, name))
        connection.begin()
        if connection.dialect.name == "sqlite":
            # pysqlite/aiosqlite only BEGIN before DML: without this the first SAVEPOINT would itself become
            # the transaction, and releasing it would commit.
            connection.exec_driver_sql("BEGIN")
        return connection

    def _release(self) -> None:
        """Roll back and close every held connection; raise naming the binds that could not be."""
        if self._plugin.sessions.sandbox is self:
            self._plugin.sessions.sandbox = None
        for listener in self._listeners:
            event.remove(*listener)
        self._listeners.clear()
        failures: list[str] = []
        self._releasing = True
        try:
            for key, connection in self._connections.items():
                for name in _ENDING:
                    connection.__dict__.pop(name, None)
                if connection.invalidated:  # lost mid-sandbox: the server discarded the transaction with it
                    self.lost.append(key)
                try:
                    connection.rollback()
                except Exception as exc:
                    failures.append(f"bind {key!r}: {describe_error(exc)}")
                    with contextlib.suppress(Exception):  # the server discards the transaction with the connection
                        connection.invalidate()
                with contextlib.suppress(Exception):  # rolled back (or dropped) already: closing only pools it
                    connection.close()
        finally:
            self._releasing = False
            self._connections.clear()
            self._held.clear()
        if failures:
            raise SandboxError(
                f"the sandbox could not roll back {'; '.join(failures)}. The connection was dropped, which makes "
                "the server discard its open transaction; check the data if the server was not reachable"
            )
        self.rolled_back = True

    async def __aenter__(self) -> Sandbox:
        if self._plugin.config.is_async:
            await greenlet_spawn(self._open)
        else:
            self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):  # a cancelled test or command must still roll back
            if self._plugin.config.is_async:
                await greenlet_spawn(self._release)
            else:
                self._release()

    def __enter__(self) -> Sandbox:
        if self._plugin.config.is_async:
            raise LifecycleError("this config is async; use `async with plugin.sandbox():`")
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release()

    # -- the guard -----------------------------------------------------------------------------------

    def _listen(self, engine: Engine, name: str, listener: Callable[..., Any]) -> None:
        event.listen(engine, name, listener)
        self._listeners.append((engine, name, listener))

    def _guard(self, key: str) -> Callable[..., None]:
        dialect = self._connections[key].dialect.name

        def refuse_escapes(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
            if conn not in self._held:
                raise StatementRefusedError(key, shorten(statement), _OUTSIDE)
            if (refused := _refusal(statement, dialect)) is not None:
                raise StatementRefusedError(key, *refused)

        return refuse_escapes

    def _refuse_ending(self, key: str, name: str) -> Callable[..., None]:
        def refuse(*_args: Any, **_kwargs: Any) -> None:
            raise StatementRefusedError(key, f"Connection.{name}() on the sandbox's connection", _ENDED_BY_SANDBOX)

        return refuse

    def _guard_transaction(self, key: str, name: str) -> Callable[..., None]:
        def refuse(conn: Connection, *_args: Any) -> None:
            if conn in self._held and not self._releasing:
                raise StatementRefusedError(key, f"Connection.{name}() on the sandbox's connection", _ENDED_BY_SANDBOX)

        return refuse


@functools.lru_cache(maxsize=1024)
def _refusal(statement: str, dialect: str) -> tuple[str, str] | None:
    """The first part of ``statement`` the sandbox refuses on ``dialect``, as (label, reason), or None.

    Cached: an app sends the same few compiled statements over and over (a test of three inserts and a
    read sends 21, of 4 distinct texts), and reading one costs ~17 us against ~0.2 us for a cache hit
    (measured for bench/sandbox_tests.py's statements on PostgreSQL).
    """
    for part in split(statement, dialect):
        if (reason := sandbox_refusal(part, dialect)) is not None:
            return part.label, reason
    return None

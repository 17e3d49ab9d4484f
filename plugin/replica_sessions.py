"""Sessions that read from replicas: what the plugin makes instead of plain routed sessions when a bind
has ``replicas=[...]`` (decided once, when the plugin is built; apps without replicas never see them).

:class:`ReplicaRoutingSession` is a :class:`~plugin.sessions.RoutingSession` whose ``get_bind`` asks its
unit of work's :class:`~plugin.replicas.ReplicaRouting` where a statement goes. A read that may go to a
replica gets a *connection* of that replica (opened here, so that one that fails to connect is skipped
before SQLAlchemy uses it); SQLAlchemy begins and ends the session's transaction on it as on any bind, and
the connection is given back when that transaction ends. Writes, flushes and reads of pinned binds get the
primary's engine, exactly as a plain routed session would.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from plugin._sqlalchemy import is_flushing
from plugin.replicas import is_read
from plugin.sessions import (
    AsyncRoutingSession,
    RoutingSession,
    SessionFactory,
    SyncRoutingSession,
    deferred,
    guard_threads,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import SessionTransaction
    from sqlalchemy.sql.expression import ClauseElement

    from plugin.binds import BindRouter
    from plugin.config import _SQLAlchemyConfig
    from plugin.engines import EngineRegistry
    from plugin.replicas import ReplicaRouting, Replicas

__all__ = (
    "AsyncReplicaRoutingSession",
    "ReplicaRoutingSession",
    "ReplicaSessionFactory",
    "current_routing",
    "request_routing",
)


class ReplicaRoutingSession(RoutingSession):
    """A routed ``Session`` whose reads may go to a replica (see the module docs)."""

    routing: ReplicaRouting
    """Where this session's unit of work reads each bind from."""

    def __init__(self, *, routing: ReplicaRouting, **options: Any) -> None:
        state = self.__dict__
        state["routing"] = routing
        state["replica_connections"] = {}
        super().__init__(**options)

    def get_bind(  # noqa: PLR0911 - one return per routing rule
        self,
        mapper: Any = None,
        *,
        clause: ClauseElement | None = None,
        bind: Any = None,
        _sa_skip_events: bool | None = None,
        _sa_skip_for_implicit_returning: bool = False,
        **kw: Any,
    ) -> Engine | Connection:
        """The primary's engine, or a connection of this unit of work's replica of the statement's bind.

        ``bind_arguments={"primary": True}`` sends one statement to the primary. Called without a statement
        (``session.connection()``, a flush, a dialect question), the answer is the primary; for
        ``session.connection()`` and a mapper's flush or bulk step the bind is pinned to it for the rest of
        the unit of work, since whatever runs on that connection may write.
        """
        if bind is not None:
            return bind  # type: ignore[no-any-return]
        key = kw.get("bind_key") or self.pinned or self.router.key_for(mapper, clause)
        routing = self.routing
        if key not in routing.sets:
            return self.targets(key)
        if routing.replica_only:  # db shell/run --replica: everything on the replica, which refuses writes
            return self._replica(key)
        if clause is None:
            # The primary. Pinned for a flush or bulk step (get_bind(mapper)) and for session.connection(),
            # whose statements (writes, maybe) are not seen here; not for a bare get_bind(), a dialect
            # question such as repositories ask before their first query.
            if mapper is not None or "_handing_out_connection" in self.__dict__ or is_flushing(self):
                routing.wrote_on(key)
            return self.targets(key)
        if is_flushing(self) or not is_read(clause):
            routing.wrote_on(key)
            return self.targets(key)
        if kw.get("primary") or not routing.reads_replica(key):
            return self.targets(key)
        return self._replica(key)

    def connection(self, bind_arguments: Any = None, execution_options: Any = None) -> Connection:
        """``Session.connection()``, marked so that ``get_bind`` pins the bind it answers for (see there)."""
        state = self.__dict__
        state["_handing_out_connection"] = True
        try:
            return super().connection(bind_arguments, execution_options)
        finally:
            del state["_handing_out_connection"]

    def _replica(self, key: str) -> Engine | Connection:
        connections: dict[str, Connection] = self.__dict__["replica_connections"]
        connection = connections.get(key)
        if connection is None or connection.closed:
            connection = self.routing.connect(key)
            if connection is None:  # every replica failed or is cooling down: the primary reads
                return self.targets(key)
            connections[key] = connection
        return connection


@event.listens_for(ReplicaRoutingSession, "after_transaction_end")
def _give_back_replica_connections(session: ReplicaRoutingSession, transaction: SessionTransaction) -> None:
    # SQLAlchemy ended its transaction on them but leaves connections it was handed open: close them now,
    # so they return to their pool as the primary's do (the next transaction opens new ones).
    if transaction.parent is None and (connections := session.__dict__.get("replica_connections")):
        for connection in connections.values():
            connection.close()
        connections.clear()


class SyncReplicaRoutingSession(ReplicaRoutingSession):
    """The :class:`ReplicaRoutingSession` of sync configs (see :class:`~plugin.sessions.SyncRoutingSession`)."""


guard_threads(SyncReplicaRoutingSession)


class AsyncReplicaRoutingSession(AsyncRoutingSession):
    """The ``AsyncSession`` of a :class:`ReplicaRoutingSession`."""

    sync_session_class = ReplicaRoutingSession  # type: ignore[assignment]  # a RoutingSession subclass


request_routing: ContextVar[ReplicaRouting | None] = ContextVar("sqlalchemy_plugin_replica_routing", default=None)
"""The routing of the request being handled; set by :class:`~plugin.replica_middleware.ReplicaMiddleware`."""


def current_routing() -> ReplicaRouting | None:
    """The routing of the request being handled, or None outside a request."""
    return request_routing.get()


class ReplicaSessionFactory(SessionFactory):
    """:class:`~plugin.sessions.SessionFactory` for configs with replicas: sessions share their request's
    routing; outside a request each session gets its own, reading from the primary unless ``replica=True``.
    """

    def __init__(
        self, config: _SQLAlchemyConfig, registry: EngineRegistry, router: BindRouter, replicas: Replicas
    ) -> None:
        super().__init__(config, registry, router)
        self.replicas = replicas

    def __call__(
        self, bind: str | None = None, *, replica: bool = False, routing: ReplicaRouting | None = None
    ) -> AsyncRoutingSession | RoutingSession:
        """A new session: routed (``bind=None``) or pinned to one bind, reading from replicas when its
        request may (or ``replica=True``, or the given ``routing`` says so)."""
        options = self.options(bind)
        if self.sandbox is not None:  # a sandbox holds the primaries' connections: replicas stay out of it
            return AsyncRoutingSession(**options) if self._is_async else SyncRoutingSession(**options)
        if routing is None:
            routing = current_routing() if not replica else None
            if routing is None:
                routing = self.replicas.routing(read=replica)
        options["routing"] = routing
        return AsyncReplicaRoutingSession(**options) if self._is_async else SyncReplicaRoutingSession(**options)

    def maker(self, bind: str | None) -> Callable[[], AsyncRoutingSession | RoutingSession]:
        """What the request path calls per session: the base class's fast path (the bind's options, not
        copied, handed to a deferred session), plus the request's routing. Going through ``__call__``
        instead cost 3 us per session, as much as the rest of the replica routing of a GET together.
        """
        shared = self._options[bind]
        replicas = self.replicas

        def make() -> AsyncRoutingSession | RoutingSession:
            if self.sandbox is not None:
                return self(bind)
            routing = request_routing.get() or replicas.routing(read=False)
            if self._is_async:  # the routing is for its sync session's __init__
                return deferred(AsyncReplicaRoutingSession, {**shared, "routing": routing})
            session = deferred(SyncReplicaRoutingSession, shared)
            state = session.__dict__
            state["routing"], state["replica_connections"] = routing, {}
            return session

        return make

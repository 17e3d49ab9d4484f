"""Bind-routed sessions, created for free and initialised on first use.

:class:`RoutingSession` is a ``Session`` whose ``get_bind`` asks the :class:`~plugin.binds.BindRouter`
which bind a statement belongs to; :class:`AsyncRoutingSession` is the ``AsyncSession`` around it. Both
defer their real ``__init__`` until an attribute is first needed: building a ``Session`` costs
microseconds, and many requests declare a session (often through another dependency) without using
it. Until first use a session is a bare object holding its arguments (:func:`deferred`); afterwards it
is an ordinary session of its class. An async session's sync session is made in full with it.

A session records the connections its transaction really began (SQLAlchemy's ``after_begin`` event),
by bind, so that :func:`~plugin.transactions.settle` commits exactly those: asking ``get_bind()`` for a
dialect takes no connection and does not make a bind count as used.

Explicit routing: ``session.execute(text("..."), bind_arguments={"bind_key": "logs"})``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, Union

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import FromStatement, Session, SessionTransaction
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect

from plugin._sqlalchemy import StatementHook, own_transaction
from plugin.exceptions import LifecycleError
from plugin.statements import split

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Engine, RootTransaction
    from sqlalchemy.sql.base import Executable
    from sqlalchemy.sql.expression import ClauseElement

    from plugin.binds import BindRouter
    from plugin.config import _SQLAlchemyConfig
    from plugin.engines import EngineRegistry
    from plugin.sandbox import Sandbox
    from plugin.twophase import InDoubt

__all__ = (
    "AsyncRoutingSession",
    "BoundConnection",
    "RoutingSession",
    "SessionFactory",
    "SyncRoutingSession",
    "began_connections",
    "close_now",
    "deferred",
    "guard_threads",
    "is_started",
    "mark_ended",
    "mark_settled",
    "or_invalidate",
    "threads",
)

Target = Union["Engine", "Connection"]

logger = logging.getLogger("plugin.sessions")

AFTER_SETTLE = (
    "{what} after this session's transaction was settled (its request's response had started, or its "
    "plugin.transaction() block had ended): it would never be committed. Do background work in a "
    "transaction of its own: `async with plugin.transaction() as session:` (`with` in sync apps)"
)


AFTER_END = (
    "session.{name}() after this request (or unit of work) ended: its sessions were closed, and a "
    "connection taken now would never be given back. Do later work in a transaction of its own: "
    "`async with plugin.transaction() as session:` (`with` in sync apps)"
)


def mark_ended(session: Session | AsyncSession) -> None:
    """Note that ``session`` was closed for good by its unit of work: later operations through it raise."""
    session.__dict__["_ended"] = True  # kept by a deferred session's initialisation


def is_started(session: Session | AsyncSession) -> bool:
    """Whether a (possibly deferred) session has been used, i.e. has real session state."""
    return "_deferred" not in session.__dict__


def mark_settled(session: Session | AsyncSession) -> None:
    """Note that the unit of work ``session`` belongs to was settled: later writes through it raise."""
    if isinstance(session, AsyncRoutingSession):
        if is_started(session):
            session.sync_session.settled = True  # type: ignore[attr-defined]
        else:
            session.__dict__["_settled"] = True  # passed on to its sync session if it is ever used
    elif isinstance(session, RoutingSession):
        session.settled = True


# -- created for free, initialised on first use ---------------------------------------------------------


def _on_first_use(session: Any, name: str) -> Any:
    """The ``__getattr__`` of a session class's deferred twin: turn the deferred ``session`` into an ordinary
    instance of its class (``__class__`` assignment: the twin adds no state, so the layout is the same), run
    the class's ``_first_use`` with the arguments the session was created with, and answer ``name``."""
    options = session.__dict__.pop("_deferred", None)
    if options is None:
        raise AttributeError(f"{type(session).__name__!r} object has no attribute {name!r}")
    object.__setattr__(session, "__class__", type(session).__base__)
    session._first_use(options)
    return getattr(session, name)


_twins: dict[type[Any], type[Any]] = {}

S = TypeVar("S", bound="AsyncSession | Session")


def _twin(cls: type[S]) -> type[S]:
    """``cls``'s deferred twin: a subclass whose ``__getattr__`` is :func:`_on_first_use`, made once per class."""
    twin = _twins.get(cls)
    if twin is None:
        namespace = {"__getattr__": _on_first_use, "__doc__": cls.__doc__}
        namespace.update(__module__=cls.__module__, __qualname__=cls.__qualname__)
        twin = _twins[cls] = type(cls.__name__, (cls,), namespace)
    return twin


def deferred(cls: type[S], options: dict[str, Any]) -> S:
    """A session of ``cls`` that runs ``cls._first_use(options)`` when an attribute it lacks is first asked
    for, and is an ordinary ``cls`` from then on; ``options`` is kept as given (not copied) until then.

    Until first use it is an instance of ``cls``'s twin, whose ``__getattr__`` does that. The twin is left
    at first use because a class with ``__getattr__`` costs every attribute access on its instances a second
    lookup, and keeps CPython's specialising interpreter from caching them: SQLAlchemy reads hundreds of
    session attributes a request, and with ``__getattr__`` on the session classes themselves a primary-key
    read cost about 15,000 instructions more (counted with callgrind; docs/benchmarks.md).
    """
    session: S = object.__new__(_twin(cls))
    session.__dict__["_deferred"] = options
    return session


def _defer(session: AsyncSession | Session, options: dict[str, Any]) -> None:
    """What a routing session's ``__init__`` does: make ``session`` what :func:`deferred` makes."""
    session.__dict__["_deferred"] = options
    object.__setattr__(session, "__class__", _twin(type(session)))


class BoundConnection(NamedTuple):
    """A connection a session's transaction began on one bind, and the transaction it owns there."""

    bind: str
    connection: Connection
    transaction: RootTransaction | None
    """The root transaction the session began; ``None`` when it joined a transaction it does not own (its
    caller's, on a connection passed as ``bind``; a sandbox's held connection, where the session only has a
    savepoint)."""


class RoutingSession(StatementHook):
    """A ``Session`` that routes every statement to its bind (see :mod:`plugin.binds`).

    It records the connections its transaction began, by bind, so that
    :func:`~plugin.transactions.settle` can commit them in bind order.
    """

    router: BindRouter
    targets: Callable[[str], Target]
    bind_of: Callable[[Engine], str | None]
    in_doubt: InDoubt
    pinned: str | None
    settled = False
    """Set once a request's (or unit of work's) transaction was settled: a later write raises."""
    wrote = False
    """Set once something was, or may have been, written through this session: a flush with changes, a
    statement that is not a ``SELECT`` (``text()`` included, typed with ``.columns()`` too), a connection
    handed out (``connection()``, where anything may run) or a legacy bulk method. A unit of work none of
    whose sessions wrote is settled without the cancellation shield (:func:`plugin.transactions.settle_all`)."""
    outside: list[Connection]
    """The transaction's connections of engines that are neither a bind's nor a read replica's
    (``bind_arguments={"bind": engine}``), not yet committed: :func:`~plugin.commit.settle` commits each
    by itself, after the binds."""
    _begun: list[BoundConnection]

    def __init__(self, *, _start_now: bool = False, **options: Any) -> None:
        """Keyword arguments: ``router``, ``targets``, ``bind_of``, ``in_doubt``, ``pinned`` (optional), and
        ``Session``'s own. They are kept as given (not copied) until first use (:func:`deferred`); with
        ``_start_now`` (private: an async session making its sync session) the session starts at once."""
        if _start_now:
            self._first_use(options)
        else:
            _defer(self, options)

    def _first_use(self, deferred: dict[str, Any]) -> None:
        """The real ``__init__``, run on first use."""
        options = dict(deferred)
        self.router = options.pop("router")
        self.targets = options.pop("targets")
        self.bind_of = options.pop("bind_of")
        self.in_doubt = options.pop("in_doubt")
        self.pinned = options.pop("pinned", None)
        self._begun = []
        self.outside = []
        Session.__init__(self, **options)

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: ClauseElement | None = None,
        bind: Any = None,
        _sa_skip_events: bool | None = None,
        _sa_skip_for_implicit_returning: bool = False,
        **kw: Any,
    ) -> Engine | Connection:
        """The engine (or connection) of the statement's bind: ``bind_key`` argument, pinned bind, or route.

        SQLAlchemy passes the statement (``clause``) and its mapper; the route is the bind owning every
        table the statement uses (:meth:`~plugin.binds.BindRouter.key_for`). Called with no arguments,
        there is nothing to route, and the answer is the session's own bind: the pinned bind of a
        ``<bind>_db_session``, the default bind of the routed ``db_session``. Services that learn their
        dialect this way are built on the session of their model's bind (see the README).
        """
        if bind is not None:
            return bind  # type: ignore[no-any-return]
        return self.targets(kw.get("bind_key") or self.pinned or self.router.key_for(mapper, clause))

    def before_statement(self, statement: Executable, bind_arguments: dict[str, Any] | None) -> dict[str, Any]:
        """Refuse a statement after the unit of work ended, and a write after it settled; note a statement that
        may write (see :attr:`wrote`); hand ``get_bind`` the statement.

        DML, DDL, ``text()`` and ``text().columns()`` (a ``TextualSelect``: a ``SELECT`` to SQLAlchemy, though
        its SQL is anything; an ``INSERT ... RETURNING`` typed this way is common) may write. A ``SELECT``
        that writes (a function) is settled as a read.
        """
        if "_ended" in self.__dict__:  # a sync session (async ones are refused by their guard)
            raise LifecycleError(AFTER_END.format(name="execute"))
        if not statement.is_select or isinstance(statement, TextualSelect):
            self.wrote = True
        if self.settled and _writes(statement):
            raise LifecycleError(AFTER_SETTLE.format(what="a write statement"))
        # SQLAlchemy hands get_bind the statement of every ORM select and DML and of every Core statement,
        # but neither mapper nor statement for an ORM compound select (a union, except or intersect of
        # ORM selects): without it here, the default bind would answer. Bind arguments given win.
        return {"clause": statement, **bind_arguments} if bind_arguments else {"clause": statement}

    def connection(self, *args: Any, **kwargs: Any) -> Connection:
        """``Session.connection()``; whatever runs on the connection may write, so the session counts as written."""
        self.wrote = True
        return super().connection(*args, **kwargs)

    def bulk_save_objects(self, *args: Any, **kwargs: Any) -> None:
        """``Session.bulk_save_objects()``; it writes without a flush event, so it is noted here."""
        self.wrote = True
        super().bulk_save_objects(*args, **kwargs)

    def bulk_insert_mappings(self, *args: Any, **kwargs: Any) -> None:
        """``Session.bulk_insert_mappings()``; it writes without a flush event, so it is noted here."""
        self.wrote = True
        super().bulk_insert_mappings(*args, **kwargs)

    def bulk_update_mappings(self, *args: Any, **kwargs: Any) -> None:
        """``Session.bulk_update_mappings()``; it writes without a flush event, so it is noted here."""
        self.wrote = True
        super().bulk_update_mappings(*args, **kwargs)

    def bound_connections(self) -> list[BoundConnection]:
        """The connections of the current transaction, in bind order (empty when none was taken)."""
        begun: list[BoundConnection] | None = self.__dict__.get("_begun")
        if not begun:
            return []
        rank = self.router.rank
        return sorted(begun, key=lambda bound: rank[bound.bind]) if len(begun) > 1 else list(begun)


def began_connections(session: Session) -> list[BoundConnection]:
    """The bind connections ``session``'s transaction began, in bind order (none for other sessions)."""
    return session.bound_connections() if isinstance(session, RoutingSession) else []


@event.listens_for(RoutingSession, "after_begin")
def _record_connection(session: RoutingSession, transaction: SessionTransaction, connection: Connection) -> None:
    if transaction.nested:
        # begin_nested(): the event fires again for the savepoint, after it fired for the root transaction
        # on the same connection (which is what settle() commits).
        return
    try:
        key = session.bind_of(connection.engine)
    except LifecycleError:
        key = None  # an engine that is neither a bind's nor a replica's (bind_arguments={"bind": engine})
    else:
        if key is None and connection in (session.__dict__.get("replica_connections") or {}).values():
            return  # a replica's, taken for a read: not a bind's either, but nothing is written through it
    if key is None:  # nothing to order: settle() commits it after the binds
        session.outside.append(connection)
        return
    # The root transaction the session began there, the one settle() commits; None for one it joined (a caller's
    # transaction, a sandbox's connection where the session has a savepoint), which its owner decides.
    session._begun.append(BoundConnection(key, connection, own_transaction(session, connection)))


@event.listens_for(RoutingSession, "after_transaction_end")
def _forget_connections(session: RoutingSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session._begun.clear()
        session.outside.clear()


@event.listens_for(RoutingSession, "before_flush")
def _before_flush(session: RoutingSession, _context: Any, _instances: Any) -> None:
    # SQLAlchemy calls this only for a flush that has changes to write.
    if session.settled:
        raise LifecycleError(AFTER_SETTLE.format(what="a flush"))
    session.wrote = True


_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "CREATE", "ALTER", "DROP", "TRUNCATE"})


def _writes(statement: Executable) -> bool:
    """Whether ``statement`` writes: DML, DDL, or SQL text whose statements do (read as the sandbox reads SQL:
    comments, strings, ``WITH`` clauses). ``text().columns()`` and ``select(...).from_statement(...)`` are
    what they wrap."""
    while isinstance(statement, (TextualSelect, FromStatement)):
        statement = statement.element
    if isinstance(statement, TextClause):
        return any(s.verb in _WRITES for s in split(statement.text))
    return bool(statement.is_dml) or isinstance(statement, ExecutableDDLElement)


# -- a sync session is not closed under a thread using it ----------------------------------------------


def or_invalidate(session: Session, step: Callable[[], object], doing: str) -> None:
    """Run ``step`` (``session.close``, ``session.rollback``); if it fails (a connection cut mid-query), log
    it and drop the session's connections rather than pool them. Never raises."""
    try:
        step()
    except Exception:
        logger.warning("%s a session failed; invalidating its connections", doing, exc_info=True)
        try:
            session.invalidate()
        except Exception:
            logger.exception("invalidating a session's connections failed")


def close_now(session: Session) -> None:
    """Close ``session``, dropping its connections if that fails (see :func:`or_invalidate`)."""
    or_invalidate(session, session.close, "closing")


_using = threading.Lock()


class _Threads:
    """Which sync sessions a thread is inside of, so that the end of their unit of work never closes one
    under that thread.

    A sync handler (``sync_to_thread``) and a sync flush run in worker threads that a cancelled request stops
    waiting for but cannot stop. Closing a session while its thread waits for a statement's reply sends a
    ROLLBACK on the same connection: psycopg serialises the two, pymysql is put out of step and the
    connection goes back to the pool broken. So a session a thread is inside of is closed by that thread
    when it leaves; any other is closed at once and refuses to be used again. Also the
    :class:`~plugin.commit.Gate` of the sync flush.
    """

    def enter(self, session: Session) -> bool:
        """A thread starts using ``session``; ``False`` if it was closed by its unit of work meanwhile."""
        state = session.__dict__
        with _using:
            if "_closing" in state:
                return False
            state["_inside"] = state.get("_inside", 0) + 1
            return True

    def leave(self, session: Session) -> None:
        """The thread is done with ``session``; it closes it if its unit of work ended meanwhile."""
        state = session.__dict__
        with _using:
            state["_inside"] -= 1
            close = not state["_inside"] and state.pop("_close_when_done", False)
            if close:
                state["_closing"] = True
        if close:
            close_now(session)

    def close_when_done(self, session: Session) -> bool:
        """From the end of ``session``'s unit of work: ``True`` when a thread is inside it (and will close it);
        else the session refuses further use and the caller closes it now."""
        state = session.__dict__
        with _using:
            if state.get("_inside"):
                state["_close_when_done"] = True
                return True
            state["_closing"] = True
            return False


threads = _Threads()

_THREAD_OPERATIONS = (
    "execute", "scalar", "scalars", "get", "get_one", "merge", "refresh", "flush", "commit", "rollback",
    "connection", "bulk_save_objects", "bulk_insert_mappings", "bulk_update_mappings",
)  # fmt: skip


def _one_thread_user(cls: type[Session], name: str) -> Callable[..., Any]:
    operation = getattr(cls, name)

    @functools.wraps(operation)
    def guarded(self: Session, *args: Any, **kwargs: Any) -> Any:
        if not threads.enter(self):
            raise LifecycleError(AFTER_END.format(name=name))
        try:
            return operation(self, *args, **kwargs)
        finally:
            threads.leave(self)

    return guarded


def guard_threads(cls: type[Session]) -> None:
    """Route ``cls``'s operations through :data:`threads` (sync configs' session classes)."""
    for name in _THREAD_OPERATIONS:
        setattr(cls, name, _one_thread_user(cls, name))


class SyncRoutingSession(RoutingSession):
    """The :class:`RoutingSession` of sync configs: never closed under a thread using it (see :class:`_Threads`).
    Async configs do not need it: their sessions run in the event loop's thread, one task at a time."""


guard_threads(SyncRoutingSession)


# -- one task at a time ------------------------------------------------------------------------------

_OPERATIONS = (
    "execute", "scalar", "scalars", "get", "get_one", "stream", "stream_scalars", "delete", "delete_all",
    "merge", "merge_all", "flush", "refresh", "run_sync", "connection", "commit", "rollback", "reset",
)  # fmt: skip


def _one_task_at_a_time(name: str) -> Callable[..., Any]:
    operation = getattr(AsyncSession, name)

    @functools.wraps(operation)
    async def guarded(self: AsyncRoutingSession, *args: Any, **kwargs: Any) -> Any:
        state = self.__dict__
        if "_ended" in state:
            raise LifecycleError(AFTER_END.format(name=name))
        task = asyncio.current_task()
        if state.get("_user") is task:  # inside one of its own operations (scalars() calls execute())
            return await operation(self, *args, **kwargs)
        # Another task is inside an operation (Litestar resolves sibling dependencies concurrently;
        # asyncio.gather): wait for it, so the operations run one after another, never interleaved.
        if state.get("_user") is not None:
            await self.until_idle()
        state["_user"] = task
        try:
            return await operation(self, *args, **kwargs)
        finally:
            state["_user"] = None
            for waiter in state.pop("_waiters", ()):
                if not waiter.done():
                    waiter.set_result(None)

    return guarded


class AsyncRoutingSession(AsyncSession):
    """The ``AsyncSession`` of a :class:`RoutingSession`; what ``db_session`` is in async apps.

    Its operations run one task at a time: a task that calls one while another task is inside one waits
    for it (an ``AsyncSession`` is not safe for interleaved use; Litestar resolves sibling dependencies,
    and ``asyncio.gather`` runs coroutines, in several tasks at once). The check costs one extra frame
    per operation, a few hundred nanoseconds.
    """

    sync_session_class = RoutingSession

    def __init__(self, **options: Any) -> None:
        """``AsyncSession``'s keyword arguments (and :class:`RoutingSession`'s, passed on to its sync session),
        kept as given until first use (:func:`deferred`)."""
        _defer(self, options)

    def _first_use(self, options: dict[str, Any]) -> None:
        """The real ``__init__``, run on first use. Its sync session starts at once: every operation of the
        async session uses it, and deferring it too (a second twin, its ``__getattr__`` on the first access, a
        second ``__class__`` assignment) cost a primary-key read about 36,000 instructions (callgrind, means
        over hash seeds; docs/benchmarks.md)."""
        AsyncSession.__init__(self, _start_now=True, **options)
        if self.__dict__.pop("_settled", False):
            self.sync_session.settled = True  # type: ignore[attr-defined]

    async def until_idle(self) -> None:
        """Wait until no other task is inside one of this session's operations."""
        state = self.__dict__
        while (user := state.get("_user")) is not None and user is not asyncio.current_task():
            waiter = asyncio.get_running_loop().create_future()
            state.setdefault("_waiters", []).append(waiter)
            await waiter


for _name in _OPERATIONS:
    setattr(AsyncRoutingSession, _name, _one_task_at_a_time(_name))


class SessionFactory:
    """Makes the routed session and the per-bind sessions of one config.

    While a :class:`~plugin.sandbox.Sandbox` is active (``sandbox`` is set), every session it makes joins
    the sandbox's held connections with savepoints instead of using the engines.
    """

    def __init__(self, config: _SQLAlchemyConfig, registry: EngineRegistry, router: BindRouter) -> None:
        self._is_async = config.is_async
        self._router = router
        self.sandbox: Sandbox | None = None
        """The active sandbox, set and cleared by the sandbox itself."""
        common = {
            "router": router,
            "targets": registry.sync_engine,
            "bind_of": registry.bind_of,
            "in_doubt": registry.in_doubt,
            "twophase": config.two_phase,
            # Objects stay readable after the commit (a streaming body, a response serialised later);
            # advanced-alchemy's default too. A bind's session_options may turn it back on.
            "expire_on_commit": False,
        }
        binds = config.bind_configs
        self._options: dict[str | None, dict[str, Any]] = {
            None: {**common, **binds[config.default_bind].session_options},
            **{key: {**common, "pinned": key, **bind.session_options} for key, bind in binds.items()},
        }

    def options(self, bind: str | None = None) -> dict[str, Any]:
        """The keyword arguments a session gets (router, targets, pinned bind, session options)."""
        options = dict(self._options[bind if bind is None else self._router.require(bind)])
        if self.sandbox is not None:  # one attribute test: the request path pays nothing more outside a sandbox
            options.update(targets=self.sandbox.connection, join_transaction_mode="create_savepoint", twophase=False)
        return options

    def __call__(self, bind: str | None = None) -> AsyncRoutingSession | RoutingSession:
        """A new, not yet initialised session: routed (``bind=None``) or pinned to one bind."""
        options = self.options(bind)
        return AsyncRoutingSession(**options) if self._is_async else SyncRoutingSession(**options)

    def maker(self, bind: str | None) -> Callable[[], AsyncRoutingSession | RoutingSession]:
        """``lambda: self(bind)`` for a bind known to be configured, made for the request path.

        Outside a sandbox a session keeps the bind's own options dict, not a copy: a deferred session only
        holds it until its ``__init__`` unpacks it (and copies it there). Two copies and a keyword call per
        request were a measurable part of an unused session's cost (see :class:`~plugin.middleware.RequestSessions`).
        """
        shared = self._options[bind]
        cls: type[AsyncRoutingSession | RoutingSession] = AsyncRoutingSession if self._is_async else SyncRoutingSession

        def make() -> AsyncRoutingSession | RoutingSession:
            if self.sandbox is not None:
                return self(bind)
            return deferred(cls, shared)

        return make

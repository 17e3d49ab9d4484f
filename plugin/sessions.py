"""Bind-routed sessions, created for free and initialised on first use.

:class:`RoutingSession` is a ``Session`` whose ``get_bind`` asks the :class:`~plugin.binds.BindRouter`
which bind a statement belongs to; :class:`AsyncRoutingSession` is the ``AsyncSession`` around it. Both
defer their real ``__init__`` until an attribute is first needed: building a ``Session`` costs
microseconds, and many requests declare a session (often through another dependency) without using
it. Until first use a session is a bare object holding its arguments; afterwards it is an ordinary
session of its class.

Explicit routing: ``session.execute(text("..."), bind_arguments={"bind_key": "logs"})``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.expression import ClauseElement

    from plugin.binds import BindRouter
    from plugin.config import _SQLAlchemyConfig
    from plugin.engines import EngineRegistry

__all__ = ("AsyncRoutingSession", "RoutingSession", "SessionFactory", "is_started")

Target = Union["Engine", "Connection"]


def is_started(session: Session | AsyncSession) -> bool:
    """Whether a (possibly deferred) session has been used, i.e. has real session state."""
    return "_deferred" not in session.__dict__


class RoutingSession(Session):
    """A ``Session`` that routes every statement to its bind (see :mod:`plugin.binds`).

    It records which binds it has handed connections for, so that :func:`~plugin.transactions.settle`
    can commit them in bind order.
    """

    router: BindRouter
    targets: Callable[[str], Target]
    pinned: str | None
    _touched: dict[str, Target]

    def __init__(
        self, *, router: BindRouter, targets: Callable[[str], Target], pinned: str | None = None, **options: Any
    ) -> None:
        self.__dict__["_deferred"] = (router, targets, pinned, options)

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            deferred = self.__dict__.pop("_deferred", None)
            if deferred is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            self.router, self.targets, self.pinned, options = deferred
            self._touched = {}
            Session.__init__(self, **options)
            return getattr(self, name)

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
        """The engine (or connection) of the statement's bind: ``bind_key`` argument, pinned bind, or route."""
        if bind is not None:
            return bind  # type: ignore[no-any-return]
        key = kw.get("bind_key") or self.pinned or self.router.key_for(mapper, clause)
        target = self.targets(key)
        self._touched[key] = target
        return target

    def touched_binds(self) -> list[tuple[str, Target]]:
        """Binds used in the current transaction, in bind order."""
        touched = self.__dict__.get("_touched") or {}
        return [(key, touched[key]) for key in self.router.keys if key in touched] if touched else []


@event.listens_for(RoutingSession, "after_transaction_end")
def _forget_binds(session: RoutingSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session._touched.clear()


class AsyncRoutingSession(AsyncSession):
    """The ``AsyncSession`` of a :class:`RoutingSession`; what ``db_session`` is in async apps."""

    sync_session_class = RoutingSession

    def __init__(self, **options: Any) -> None:
        self.__dict__["_deferred"] = options

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            options = self.__dict__.pop("_deferred", None)
            if options is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            AsyncSession.__init__(self, **options)
            return getattr(self, name)


class SessionFactory:
    """Makes the routed session and the per-bind sessions of one config."""

    def __init__(self, config: _SQLAlchemyConfig, registry: EngineRegistry, router: BindRouter) -> None:
        self._is_async = config.is_async
        self._router = router
        common = {"router": router, "targets": registry.sync_engine, "twophase": config.two_phase}
        binds = config.bind_configs
        self._options: dict[str | None, dict[str, Any]] = {
            None: {**common, **binds[config.default_bind].session_options},
            **{key: {**common, "pinned": key, **bind.session_options} for key, bind in binds.items()},
        }

    def options(self, bind: str | None = None) -> dict[str, Any]:
        """The keyword arguments a session gets (router, targets, pinned bind, session options)."""
        return dict(self._options[bind if bind is None else self._router.require(bind)])

    def __call__(self, bind: str | None = None) -> AsyncRoutingSession | RoutingSession:
        """A new, not yet initialised session: routed (``bind=None``) or pinned to one bind."""
        options = self.options(bind)
        return AsyncRoutingSession(**options) if self._is_async else RoutingSession(**options)

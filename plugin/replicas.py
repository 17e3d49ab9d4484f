"""Read replicas: which server answers a read, per unit of work (a request, a script's session).

A bind with ``replicas=[...]`` gets a :class:`ReplicaSet` when its engines start: the replicas' engines, how
the next one is picked (round robin or random) and which ones are cooling down after failing to connect.
Each unit of work gets a :class:`ReplicaRouting`, shared by all its sessions:

- it reads from replicas only if it was made to (a request with a safe method, GET, HEAD or OPTIONS, or
  ``plugin.session(replica=True)``); otherwise every statement goes to the primary;
- it picks one replica per bind on its first read there and keeps it for the rest of the unit of work;
- the first write on a bind (a flush, a DML statement, ``SELECT ... FOR UPDATE``, any SQL text that is not a
  plain read) sends that statement to the primary and *pins* the bind: every later read of the unit of work
  on that bind goes to the primary too, so it never reads older data than it wrote;
- a replica that fails to connect is skipped for ``replica_cooldown`` seconds, with one WARNING; the read
  goes to the next replica, then to the primary, and the caller sees no error.

:func:`primary` forces the primary for a block (``with plugin.primary():``); ``bind_arguments={"primary":
True}`` does it for one statement. Routing happens in the session's ``get_bind`` (see
:mod:`plugin.replica_sessions`), which hands SQLAlchemy a connection of the chosen replica; that connection
lives as long as the session's transaction.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import select
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect

from plugin._sqlalchemy import locks_rows, structure_key
from plugin.exceptions import describe_error, mask_url
from plugin.statements import is_plain_read, split

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterator, Mapping

    from sqlalchemy.engine import Connection, Engine

    from plugin.config import BindConfig, _SQLAlchemyConfig
    from plugin.engines import EngineRegistry

__all__ = ("ReplicaRouting", "ReplicaSet", "Replicas", "is_read", "primary")

logger = logging.getLogger("plugin.replicas")

_forced: ContextVar[bool] = ContextVar("sqlalchemy_plugin_primary", default=False)


@contextmanager
def primary() -> Iterator[None]:
    """Inside this block every statement of every session goes to the primary (reads included).

    It does not pin anything: after the block, reads go back to the replica unless the block wrote.
    """
    token = _forced.set(True)
    try:
        yield
    finally:
        _forced.reset(token)


_REMEMBERED = 2048
"""Distinct statements whose verdict is kept (the sandbox's guard keeps its own the same way)."""


@functools.lru_cache(maxsize=_REMEMBERED)
def _text_is_read(sql: str) -> bool:
    statements = split(sql)
    return bool(statements) and all(is_plain_read(s) for s in statements)


_SELECT_READS: dict[Hashable, bool] = {}
"""Verdicts for selects, by structure (a statement object itself is new on every request)."""


def is_read(clause: Any) -> bool:
    """Whether a replica may run ``clause``: a select that locks no rows, or SQL text that only reads."""
    if isinstance(clause, TextualSelect):  # text("...").columns(...): the text decides
        clause = clause.element
    if isinstance(clause, TextClause):
        return _text_is_read(clause.text)
    if not getattr(clause, "is_select", False) or locks_rows(clause):
        return False
    # A select may hold a write: a data-modifying CTE (`select(insert(...).returning(...).cte())`) or a
    # subquery that locks rows. Looking costs a walk of the statement, so the answer is kept by its
    # structure (its cache key, which SQLAlchemy memoizes on the statement and reuses to compile it).
    structure = structure_key(clause)
    if structure is None:  # a construct SQLAlchemy does not cache: walk it every time
        return not _writes_inside(clause)
    known = _SELECT_READS.get(structure)
    if known is None:
        known = not _writes_inside(clause)
        if len(_SELECT_READS) >= _REMEMBERED:
            _SELECT_READS.clear()
        _SELECT_READS[structure] = known
    return known


def _writes_inside(clause: Any) -> bool:
    """Whether some part of ``clause`` writes (an INSERT/UPDATE/DELETE, in a CTE) or locks rows."""
    return any(isinstance(e, UpdateBase) or locks_rows(e) for e in visitors.iterate(clause))


def _idle_socket_spoke(driver: Any) -> bool:
    """Whether the server sent something on an idle connection: a server that shuts down says goodbye
    (PostgreSQL: "terminating connection due to administrator command") and closes the socket."""
    fileno = getattr(driver, "fileno", None)  # psycopg
    if not callable(fileno):
        return False
    try:
        readable, _, _ = select.select([fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _known_dead(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Pool ``checkout`` listener of replica engines: a pooled connection that its driver knows is closed,
    or whose idle socket the server wrote to (its goodbye), is replaced, without a round trip, by a new
    one, whose failure to connect is then what :meth:`ReplicaRouting.connect` sees."""
    driver = getattr(record, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)  # asyncpg notices on its own: its socket is on the loop
    if callable(is_closed):
        closed = bool(is_closed())
    else:  # psycopg: closed/broken; pymysql: open
        closed = bool(getattr(driver, "closed", False) or getattr(driver, "broken", False))
        closed = closed or getattr(driver, "open", True) is False or _idle_socket_spoke(driver)
    if closed:
        raise DisconnectionError("the replica's connection was closed by its server")


class ReplicaSet:
    """The replicas of one bind while its engines run: engines, selection and cool-downs."""

    def __init__(self, key: str, bind: BindConfig, engines: tuple[Any, ...]) -> None:
        self.key = key
        self.engines: tuple[Engine, ...] = tuple(e.sync_engine if isinstance(e, AsyncEngine) else e for e in engines)
        """Each replica's sync engine (what ``get_bind`` connects), in config order."""
        self.urls = tuple(mask_url(engine.url) for engine in self.engines)
        self.cooldown = float(bind.replica_cooldown)
        self.sticky_seconds = bind.sticky_seconds
        self._random = bind.replica_selection == "random"
        self._turn = itertools.count()
        self.down_until = [0.0] * len(self.engines)
        """``time.monotonic()`` until which each replica is skipped (0: not cooling down)."""
        self._down = False
        for engine in self.engines:
            if not event.contains(engine.pool, "checkout", _known_dead):
                event.listen(engine.pool, "checkout", _known_dead)

    def pick(self, tried: set[int] | frozenset[int] = frozenset()) -> int | None:
        """The index of the replica to use next, skipping those cooling down or ``tried``; None if none is left."""
        count = len(self.engines)
        if not tried and not self._cooling():  # the usual case: every replica is up
            return random.randrange(count) if self._random else next(self._turn) % count  # spreading load
        now = time.monotonic()
        healthy = [i for i in range(count) if i not in tried and self.down_until[i] <= now]
        if not healthy:
            return None
        if self._random:
            return random.choice(healthy)  # spreading load, not a secret
        turn = next(self._turn) % count
        return min(healthy, key=lambda i: (i - turn) % count)  # the next healthy one from `turn`

    def _cooling(self) -> bool:
        """Whether some replica is cooling down (clears cool-downs that are over)."""
        if not self._down:
            return False
        now = time.monotonic()
        self._down = any(until > now for until in self.down_until)
        return self._down

    def describe(self, index: int, exc: BaseException) -> str:
        """``exc`` in one line, without replica ``index``'s password (some drivers echo the connection string)."""
        text = describe_error(exc)
        password = self.engines[index].url.password
        return text.replace(str(password), "***") if password else text

    def failed(self, index: int, exc: BaseException, fallback: str) -> None:
        """Replica ``index`` failed to connect: skip it for the cool-down, with one WARNING."""
        now = time.monotonic()
        if self.down_until[index] <= now:
            logger.warning(
                "bind %r: replica %d (%s) failed to connect (%s); it is skipped for %g s, reads go to %s",
                self.key, index + 1, self.urls[index], self.describe(index, exc), self.cooldown, fallback,
            )  # fmt: skip
        self.down_until[index] = now + self.cooldown
        self._down = True


class ReplicaRouting:
    """Where one unit of work's statements go, bind by bind (shared by all the sessions of a request)."""

    __slots__ = ("_chosen", "pinned", "read", "replica_only", "sets", "wrote")

    def __init__(
        self, sets: Mapping[str, ReplicaSet], *, read: bool, pinned: set[str] | None = None, replica_only: bool = False
    ) -> None:
        self.sets = sets
        self.read = read
        """Reads may go to replicas (a safe method, ``replica=True``); else everything goes to the primary."""
        self.replica_only = replica_only
        """Everything goes to a replica, writes included (``db shell --replica``: the replica refuses them)."""
        self.pinned: set[str] = pinned if pinned is not None else set()
        """Binds whose reads go to the primary: written in this unit of work, or sticky from an earlier one."""
        self.wrote: set[str] = set()
        """Binds written in this unit of work (what a sticky cookie is issued for)."""
        self._chosen: dict[str, int | None] = {}

    def reads_replica(self, key: str) -> bool:
        """Whether a read on ``key`` goes to a replica now."""
        return key in self.sets and (self.replica_only or (self.read and key not in self.pinned and not _forced.get()))

    def wrote_on(self, key: str) -> None:
        """A write on ``key`` goes to the primary: from now on its reads do too."""
        if not self.replica_only:
            self.wrote.add(key)
            self.pinned.add(key)

    def connect(self, key: str) -> Connection | None:
        """A connection to this unit of work's replica of ``key`` (picked on the first call); ``None`` when
        every replica failed or is cooling down, so the primary serves the read."""
        replicas = self.sets[key]
        if key in self._chosen and self._chosen[key] is None:
            return None
        index = self._chosen.get(key)
        tried: set[int] = set()
        failure = "every replica is cooling down after failing to connect"
        if index is None or replicas.down_until[index] > time.monotonic():
            index = replicas.pick()
        while index is not None:
            tried.add(index)
            try:
                connection = replicas.engines[index].connect()
            except (DBAPIError, OSError) as exc:
                following = replicas.pick(tried)
                fallback = f"replica {following + 1}" if following is not None else "the primary"
                if self.replica_only:
                    fallback = f"replica {following + 1}" if following is not None else "nowhere (--replica)"
                replicas.failed(index, exc, fallback)
                failure = f"replica {index + 1}: {replicas.describe(index, exc)}"
                index = following
                continue
            self._chosen[key] = index
            return connection
        if self.replica_only:
            raise ConnectionError(f"bind {key!r}: no replica could be reached ({failure})")
        self._chosen[key] = None
        return None


class Replicas:
    """The plugin's replicas: a :class:`ReplicaSet` per bind that has replicas, while the engines run."""

    def __init__(self, config: _SQLAlchemyConfig, registry: EngineRegistry) -> None:
        self._config = config
        self._registry = registry
        self._sets: dict[str, ReplicaSet] = {}
        self._generation = -1
        self.sticky = {key: bind.sticky_seconds for key, bind in config.bind_configs.items() if bind.sticky_seconds}
        """Seconds of stickiness by bind, for binds with ``sticky_seconds``."""

    @property
    def sets(self) -> Mapping[str, ReplicaSet]:
        """Each bind's :class:`ReplicaSet`, made from the engines of the current start of the registry."""
        if self._generation != self._registry.generation:  # engines (re)started since: new engines, fresh health
            self._sets = {
                key: ReplicaSet(key, bind, self._registry.replicas(key))
                for key, bind in self._config.bind_configs.items()
                if bind.replicas
            }
            self._generation = self._registry.generation
        return self._sets

    def routing(self, *, read: bool, pinned: set[str] | None = None, replica_only: bool = False) -> ReplicaRouting:
        """A routing for a new unit of work."""
        return ReplicaRouting(self.sets, read=read, pinned=pinned, replica_only=replica_only)
